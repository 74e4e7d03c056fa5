"""Signed model versions: Ed25519 keys, a signature at registration, a check at every load.

A version's signature covers a canonical payload: the model's name, the version number, the
manifest's digest and the digest of every file the manifest lists (sorted), as JSON with
sorted keys and no spaces. Loading a version (the SDK, the gateway, batch scoring) checks,
once per load and never per request:

1. the signature over the payload rebuilt from the version's record, with the public key
   the store trusts under the signature's key id;
2. each file fetched from the artifact store against its digest, which step 1 proved is the
   signed one (the store hashes every read; a mismatch is refused naming the model, version
   and file);
3. the local copy's ``modelyard.json`` against the signed manifest digest; its files are
   hashed against that manifest when the model directory is validated before loading.

A signature that does not verify is always refused. An unsigned version, or one signed by a
key that is unknown or revoked, is refused only with ``require_signed_models``.

Keys: a private key is a PEM file (mode 0600) under ``<home>/keys/NAME.pem`` or where
``MODELYARD_SIGNING_KEY`` says; its public key is trusted in the metadata store under its key
id (the first 16 hex digits of the sha256 of the raw 32-byte public key). Revoked keys stay,
so the signatures they made can still be named.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel

from modelyard.artifacts import BlobSource, digest_of_bytes, digest_of_file
from modelyard.errors import (
    AlreadyExists,
    ArtifactCorrupted,
    Conflict,
    InvalidInput,
    NotFound,
    UnverifiedModel,
)
from modelyard.registry.entities import ModelVersion
from modelyard.store.schema import read_sqlite, sqlite_file

if TYPE_CHECKING:  # cryptography loads when a signature is made or checked (~15 ms)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from modelyard.store import Tx
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.signing")

KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_KEY_NAME = "default"
KeyStatus = Literal["trusted", "revoked", "unknown"]
CheckStatus = Literal["verified", "unsigned", "untrusted_key", "invalid", "tampered"]


class SigningKey(BaseModel):
    """A trusted public key; ``signs``: this workspace signs new versions with it."""

    id: str
    name: str
    public_key: str
    created_at: datetime
    created_by: str = ""
    revoked_at: datetime | None = None
    signs: bool = False


class ModelSignature(BaseModel):
    """A version's signature as stored, with what the store knows of its key."""

    model: str
    version: int
    signed: bool
    key_id: str | None = None
    key_name: str | None = None
    key_status: KeyStatus | None = None
    key_revoked_at: datetime | None = None
    public_key: str | None = None
    payload_digest: str | None = None
    signature: str | None = None
    signed_at: datetime | None = None
    signed_by: str | None = None


class SignatureCheck(BaseModel):
    """The outcome of checking a version: ``ok`` only when ``status`` is ``verified``."""

    model: str
    version: int
    ok: bool
    status: CheckStatus
    reason: str
    key_id: str | None = None
    key_name: str | None = None
    signed_by: str | None = None
    signed_at: datetime | None = None


# --- canonical payloads and keys -------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: sorted keys, no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def version_payload(
    model: str, version: int, manifest_digest: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    """What a version's signature covers."""
    files = manifest.get("files") or {}
    return {
        "model": model,
        "version": version,
        "manifest_digest": manifest_digest,
        "blobs": sorted(entry["digest"] for entry in files.values()),
    }


def key_id_of(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), as ``keys export`` prints it."""
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def parse_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; :class:`InvalidInput` for anything else."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(
            "not a PEM public key; give the file `modelyard keys export KEY_ID` wrote "
            "(-----BEGIN PUBLIC KEY-----)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("only Ed25519 public keys are accepted; make one with `keys create`")
    return key


@dataclass(frozen=True)
class Signer:
    """A private key this process signs with, and the key id it is trusted under."""

    key: Ed25519PrivateKey
    key_id: str
    name: str

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self.key.sign(data)).decode()


_PRIVATE: dict[tuple[str, int, int], Ed25519PrivateKey] = {}
_PRIVATE_LOCK = threading.Lock()


def _read_private(path: Path) -> Ed25519PrivateKey:
    """The private key in the PEM file ``path`` (parsed once per file version)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InvalidInput(
            f"the signing key {path} does not exist; create it with `modelyard keys create` "
            "or point MODELYARD_SIGNING_KEY at an existing key"
        ) from None
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _PRIVATE_LOCK:
        found = _PRIVATE.get(cache_key)
    if found is not None:
        return found
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise InvalidInput(
            f"the signing key {path} is encrypted; modelyard reads unencrypted PEM keys "
            "(keep the file mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is not an Ed25519 key; make one with `modelyard keys create`")
    with _PRIVATE_LOCK:
        _PRIVATE[cache_key] = key
    return key


def _key_id_of_pem(public_key_pem: str) -> str | None:
    try:
        return key_id_of(parse_public_key(public_key_pem))
    except (ValueError, InvalidInput):
        return None


def _verify(public_key_pem: str, data: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(signature_b64, validate=True)
        parse_public_key(public_key_pem).verify(signature, data)
    except (InvalidSignature, ValueError, InvalidInput):
        return False
    return True


# --- checking a version (no store: the same code serves both SDK transports) -------------------


def check_signature(
    version: ModelVersion, record: ModelSignature | None, pinned: Collection[str] = ()
) -> SignatureCheck:
    """Check ``record`` (the stored signature, with its key) against ``version``'s record;
    with ``pinned`` key ids (settings, outside the store), only those keys are trusted."""
    uri = version.uri
    found = {"model": version.model, "version": version.version}
    if record is None or not record.signed or record.key_id is None:
        return SignatureCheck(
            **found, ok=False, status="unsigned", reason=f"{uri} has no signature"
        )
    about = {
        "key_id": record.key_id,
        "key_name": record.key_name,
        "signed_by": record.signed_by,
        "signed_at": record.signed_at,
    }
    key = f"key {record.key_id}" + (f" ({record.key_name})" if record.key_name else "")
    data = canonical(
        version_payload(version.model, version.version, version.manifest_digest, version.manifest)
    )
    if record.payload_digest != digest_of_bytes(data):
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="invalid",
            reason=f"{uri}'s manifest or file digests are not the ones {key} signed: the "
            "version's record was changed after it was signed",
        )
    if pinned and record.key_id not in pinned:
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="untrusted_key",
            reason=f"{uri} is signed by {key}, which is not among MODELYARD_TRUSTED_KEY_IDS",
        )
    if record.public_key is not None and _key_id_of_pem(record.public_key) != record.key_id:
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="invalid",
            reason=f"{uri}: the public key stored as {key} is not that key (its id is the "
            "key's own digest): the key record was altered",
        )
    if record.key_status == "unknown" or record.public_key is None:
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="untrusted_key",
            reason=f"{uri} is signed by {key}, which this workspace does not trust; trust it "
            "with `modelyard keys trust FILE.pub --name NAME` if you know it",
        )
    if not _verify(record.public_key, data, record.signature or ""):
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="invalid",
            reason=f"{uri}'s signature by {key} does not verify: the signature or the version's "
            "record was altered",
        )
    if record.key_status == "revoked":
        when = record.key_revoked_at.isoformat(timespec="seconds") if record.key_revoked_at else ""
        return SignatureCheck(
            **found,
            **about,
            ok=False,
            status="untrusted_key",
            reason=f"{uri} is signed by {key}, which was revoked {when}".rstrip(),
        )
    return SignatureCheck(**found, **about, ok=True, status="verified", reason="signature verified")


def refusal(check: SignatureCheck, *, require: bool) -> UnverifiedModel | None:
    """Why a version must not be loaded (None: it may be)."""
    if check.status in ("invalid", "tampered"):
        return UnverifiedModel(
            f"{check.reason}; it is not loaded. See who changed it with `modelyard audit list "
            f"--entity {check.model}/{check.version}`, then restore its files from a backup or "
            "register the model again",
            model=check.model,
            version=check.version,
        )
    if require and check.status != "verified":
        uri = f"models:/{check.model}/{check.version}"
        return UnverifiedModel(
            f"{uri} is not signed by a trusted key (it {check.reason.removeprefix(uri + ' ')}); "
            f"sign it with `modelyard models sign {check.model} "
            f"{check.version}` or set MODELYARD_REQUIRE_SIGNED_MODELS=false",
            model=check.model,
            version=check.version,
        )
    return None


class _NamedBlobs:
    """A blob source whose integrity errors name the model, version and file."""

    def __init__(self, source: BlobSource, version: ModelVersion) -> None:
        self.source = source
        self.version = version
        self.paths = {e["digest"]: p for p, e in (version.manifest.get("files") or {}).items()}
        self.paths.setdefault(version.manifest_digest, "modelyard.json")

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        try:
            return self.source.get_file(digest, dest)
        except ArtifactCorrupted:
            raise self.tampered(digest) from None

    def tampered(self, digest: str) -> UnverifiedModel:
        v = self.version
        path = self.paths.get(digest, "?")
        return UnverifiedModel(
            f"{v.uri}: file {path} (blob {digest}) in the artifact store does not match its "
            "signed digest: it was modified after registration; it is not loaded. Restore the "
            "blob from a backup or register the model again",
            model=v.model,
            version=v.version,
            file=path,
            blob=digest,
        )


def verified_dir(
    source: BlobSource,
    version: ModelVersion,
    cache_dir: Path,
    record: ModelSignature | None,
    *,
    require: bool,
    pinned: Collection[str] = (),
) -> Path:
    """The version's files on local disk, after the checks of the module doc (1 to 3).

    :class:`UnverifiedModel` when a check fails.
    """
    from modelyard.formats import MANIFEST_NAME
    from modelyard.registry.files import version_dir

    refused = refusal(check_signature(version, record, pinned), require=require)
    if refused is not None:
        raise refused
    if record is None or not record.signed:
        log.debug("%s is not signed; loading it unverified", version.uri)
    path = version_dir(_NamedBlobs(source, version), version, cache_dir)
    if digest_of_file(path / MANIFEST_NAME) != version.manifest_digest:
        raise UnverifiedModel(
            f"{version.uri}: the local copy at {path} has a modelyard.json that is not the "
            "signed manifest; delete that directory so that it is fetched again",
            model=version.model,
            version=version.version,
        )
    return path


# --- the service -------------------------------------------------------------------------------

_SIGNATURE_SQL = (
    "SELECT s.key_id, s.payload_digest, s.signature, s.signed_at, s.signed_by, "
    "k.name, k.public_key, k.revoked_at FROM model_signatures s "
    "LEFT JOIN signing_keys k ON k.id = s.key_id WHERE s.version_id = '{id}'"
)
_SIGNATURES_SQL = (
    "SELECT s.version_id, s.key_id, s.payload_digest, s.signature, s.signed_at, s.signed_by, "
    "k.name, k.public_key, k.revoked_at FROM model_signatures s "
    "LEFT JOIN signing_keys k ON k.id = s.key_id WHERE s.version_id IN ({ids})"
)
_ULID = re.compile(r"[0-9A-Za-z]{1,64}")


def _sqlite_time(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of :data:`_SIGNATURE_SQL` read with sqlite3, with its times as datetimes."""
    return (*row[:3], _sqlite_time(row[3]), *row[4:7], _sqlite_time(row[7]))


def _signature(version: ModelVersion, row: tuple[Any, ...] | None) -> ModelSignature:
    """``version``'s signature from a row of :data:`_SIGNATURE_SQL` (None: not signed)."""
    found = ModelSignature(model=version.model, version=version.version, signed=row is not None)
    if row is None:
        return found
    key_id, payload_digest, signature, signed_at, signed_by, name, public, revoked = row
    found.key_id, found.payload_digest, found.signature = key_id, payload_digest, signature
    found.signed_at, found.signed_by = signed_at, signed_by
    found.key_name, found.public_key, found.key_revoked_at = name, public, revoked
    found.key_status = "unknown" if public is None else "revoked" if revoked else "trusted"
    return found


class SigningService:
    """Trusted keys, and the signatures of model versions made and checked with them."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws  # the store is opened on first use (not by a gateway's cached start)

    @property
    def keys_dir(self) -> Path:
        return self.ws.settings.resolved_home / "keys"

    # --- keys ----------------------------------------------------------------------------

    def create_key(self, name: str | None = None) -> SigningKey:
        """Make a key pair: the private key in a 0600 PEM file, the public key trusted."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from sqlalchemy import select

        from modelyard.store.tables import SigningKeyRow

        self._require_admin("create signing keys")
        name = _check_key_name(name or DEFAULT_KEY_NAME)
        path = self.ws.settings.signing_key or self.keys_dir / f"{name}.pem"
        with self.ws.store.read() as s:
            if s.scalar(select(SigningKeyRow.id).where(SigningKeyRow.name == name)):
                raise AlreadyExists(
                    f"a key named {name!r} exists already; choose another --name "
                    "(`modelyard keys list` shows them)"
                )
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise AlreadyExists(
                f"{path} exists already; choose another --name, or move that file away"
            ) from None
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            return self._add_key(private.public_key(), name, "key.create", {"path": str(path)})
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def trust_key(self, public_key: str, name: str) -> SigningKey:
        """Trust a public key made elsewhere (PEM), under ``name``."""
        self._require_admin("trust signing keys")
        return self._add_key(parse_public_key(public_key), _check_key_name(name), "key.trust", {})

    def _add_key(
        self, public: Ed25519PublicKey, name: str, action: str, extra: dict[str, Any]
    ) -> SigningKey:
        from sqlalchemy.exc import IntegrityError

        from modelyard.store.tables import SigningKeyRow

        key_id = key_id_of(public)
        row = SigningKeyRow(
            id=key_id,
            name=name,
            public_key=public_pem(public),
            created_at=datetime.now(UTC),
            created_by=self.ws.actor,
            revoked_at=None,
        )
        try:
            with self.ws.store.write(self.ws.actor) as tx:
                existing = tx.session.get(SigningKeyRow, key_id)
                if existing is not None:
                    state = "revoked" if existing.revoked_at else "trusted"
                    raise AlreadyExists(
                        f"key {key_id} is {state} already, as {existing.name!r}"
                        + ("; a revoked key cannot be trusted again" if existing.revoked_at else "")
                    )
                tx.session.add(row)
                tx.session.flush()
                tx.record(action, "signing_key", key_id, after={"name": name, **extra})
        except IntegrityError:
            raise AlreadyExists(
                f"a key named {name!r} exists already; choose another name"
            ) from None
        return self._entity(row, self._signing_id())

    def list_keys(self) -> list[SigningKey]:
        """Every key, trusted or revoked, oldest first."""
        from sqlalchemy import select

        from modelyard.store.tables import SigningKeyRow

        with self.ws.store.read() as s:
            rows = s.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created_at)).all()
        signing = self._signing_id()
        return [self._entity(r, signing) for r in rows]

    def get_key(self, key_id: str) -> SigningKey:
        from modelyard.store.tables import SigningKeyRow

        with self.ws.store.read() as s:
            row = s.get(SigningKeyRow, key_id)
            if row is None:
                raise NotFound(f"no key {key_id!r}; `modelyard keys list` shows the keys")
        return self._entity(row, self._signing_id())

    def export_key(self, key_id: str) -> str:
        """The public key as PEM, to trust it in another workspace or check signatures."""
        return self.get_key(key_id).public_key

    def revoke_key(self, key_id: str) -> SigningKey:
        """Stop trusting a key: what it signed is refused under require_signed_models."""
        from modelyard.store.tables import SigningKeyRow

        self._require_admin("revoke signing keys")

        now = datetime.now(UTC)
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.get(SigningKeyRow, key_id)
            if row is None:
                raise NotFound(f"no key {key_id!r}; `modelyard keys list` shows the keys")
            if row.revoked_at is not None:
                raise Conflict(
                    f"key {key_id} ({row.name}) was revoked already, at {row.revoked_at}"
                )
            row.revoked_at = now
            tx.record(
                "key.revoke", "signing_key", key_id, {"revoked_at": None}, {"revoked_at": now}
            )
        return self._entity(row, self._signing_id())

    def _require_admin(self, action: str) -> None:
        from modelyard.governance.entities import Permission

        self.ws.access.require(Permission.admin, action=action)

    def _signing_id(self) -> str | None:
        try:
            signer = self.signer()
        except (InvalidInput, Conflict):  # a misconfigured key signs nothing
            return None
        return None if signer is None else signer.key_id

    @staticmethod
    def _entity(row: Any, signing_id: str | None) -> SigningKey:
        return SigningKey(
            id=row.id,
            name=row.name,
            public_key=row.public_key,
            created_at=row.created_at,
            created_by=row.created_by,
            revoked_at=row.revoked_at,
            signs=row.id == signing_id,
        )

    def signer(self) -> Signer | None:
        """The key new versions and checkpoints are signed with: MODELYARD_SIGNING_KEY, else
        the newest trusted key whose private file is under ``<home>/keys``; None: no key.

        A configured key that is not trusted (unknown or revoked) is an error, not None:
        signatures nobody accepts would be worse than none.
        """
        from sqlalchemy import select

        from modelyard.store.tables import SigningKeyRow

        configured = self.ws.settings.signing_key
        if configured is None and not self.keys_dir.is_dir():
            return None  # no key was ever made here: no query
        with self.ws.store.read() as s:
            rows = s.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created_at.desc())).all()
        if configured is not None:
            key = _read_private(configured)
            key_id = key_id_of(key.public_key())
            row = next((r for r in rows if r.id == key_id), None)
            if row is None:
                raise Conflict(
                    f"the signing key {configured} (key id {key_id}) is not trusted in this "
                    "workspace; trust its public key with `modelyard keys trust FILE.pub --name "
                    "NAME` (openssl pkey -in KEY -pubout > FILE.pub)"
                )
            if row.revoked_at is not None:
                raise Conflict(
                    f"the signing key {configured} ({row.name}, {key_id}) was revoked; make a "
                    "new one with `modelyard keys create --name NAME` and point "
                    "MODELYARD_SIGNING_KEY at it"
                )
            return Signer(key, key_id, row.name)
        for row in rows:
            path = self.keys_dir / f"{row.name}.pem"
            if row.revoked_at is not None or not path.is_file():
                continue
            key = _read_private(path)
            if key_id_of(key.public_key()) != row.id:
                log.warning(
                    "%s does not hold key %s (%s); not signing with it", path, row.id, row.name
                )
                continue
            return Signer(key, row.id, row.name)
        return None

    def require_signer(self) -> Signer:
        signer = self.signer()
        if signer is None:  # the workspace's state, not the request, is what lacks it
            raise Conflict(
                "there is no signing key: create one with `modelyard keys create`, or set "
                "MODELYARD_SIGNING_KEY to a private key this workspace trusts"
            )
        return signer

    def verify_bytes(self, key_id: str, data: bytes, signature: str) -> str | None:
        """Why ``signature`` of ``data`` is not a trusted key's (None: it is)."""
        try:
            key = self.get_key(key_id)
        except NotFound:
            return f"it is signed by key {key_id}, which this workspace does not trust"
        if not _verify(key.public_key, data, signature):
            return (
                f"its signature by key {key_id} ({key.name}) does not verify: it was altered "
                "or forged"
            )
        if key.revoked_at is not None:
            return f"it is signed by key {key_id} ({key.name}), revoked at {key.revoked_at}"
        return None

    # --- signatures of versions ------------------------------------------------------------

    def add_signature(
        self,
        tx: Tx,
        signer: Signer,
        *,
        version_id: str,
        model: str,
        version: int,
        manifest_digest: str,
        manifest: dict[str, Any],
        replace: bool = False,
    ) -> ModelSignature:
        """Sign a version inside ``tx`` (the registry's, at registration), with an audit record."""
        from sqlalchemy import delete, insert

        from modelyard.store.tables import ModelSignatureRow

        data = canonical(version_payload(model, version, manifest_digest, manifest))
        values = {
            "version_id": version_id,
            "key_id": signer.key_id,
            "payload_digest": digest_of_bytes(data),
            "signature": signer.sign(data),
            "signed_at": datetime.now(UTC),
            "signed_by": tx.actor,
        }
        conn = tx.session.connection()
        if replace:
            conn.execute(
                delete(ModelSignatureRow).where(ModelSignatureRow.version_id == version_id)
            )
        conn.execute(insert(ModelSignatureRow), values)
        tx.record(
            "version.sign",
            "model_version",
            f"{model}/{version}",
            after={"key_id": signer.key_id, "payload_digest": values["payload_digest"]},
        )
        return ModelSignature(
            model=model,
            version=version,
            signed=True,
            key_id=signer.key_id,
            key_name=signer.name,
            key_status="trusted",
            payload_digest=values["payload_digest"],
            signature=values["signature"],
            signed_at=values["signed_at"],
            signed_by=tx.actor,
        )

    def sign_version(self, name: str, version: int) -> ModelSignature:
        """Sign (or re-sign, e.g. after a key rotation) an existing version."""
        from modelyard.governance.entities import Permission

        self.ws.access.require(Permission.write, model=name, action="sign versions")
        v = self.ws.registry.get_version(name, version)
        signer = self.require_signer()
        check = self.verify_version(name, version)
        if check.status in ("invalid", "tampered"):
            # Signing what was altered would make it pass: that is an admin's call, after
            # they have looked at why (a rotation re-signs versions that still verify).
            self.ws.access.require(
                Permission.admin,
                model=name,
                action=f"re-sign a version that does not verify ({check.reason})",
            )
        with self.ws.store.write(self.ws.actor) as tx:
            signed = self.add_signature(
                tx,
                signer,
                version_id=v.id,
                model=v.model,
                version=v.version,
                manifest_digest=v.manifest_digest,
                manifest=v.manifest,
                replace=True,
            )
        signed.public_key = self.get_key(signer.key_id).public_key
        return signed

    def get_signature(self, name: str, version: int) -> ModelSignature:
        """A version's signature and its key's standing (``signed`` false: it has none)."""
        return self.signature_of(self.ws.registry.get_version(name, version))

    def signature_of(self, version: ModelVersion) -> ModelSignature:
        """The signature of ``version`` (by its id). On a SQLite file this reads with the
        standard library's sqlite3: a gateway answering from its plan cache loads models
        before it opens the metadata store (see serving/plans.py)."""
        row = None
        rows = None
        url = self.ws.settings.resolved_database_url
        if sqlite_file(url) is not None and _ULID.fullmatch(version.id):
            rows = read_sqlite(url, _SIGNATURE_SQL.format(id=version.id))
            if rows is not None:
                row = _sqlite_row(rows[0]) if rows else None
        if rows is None:
            row = self._signature_row(version.id)
        return _signature(version, row)

    def signatures_of(self, versions: Sequence[ModelVersion]) -> dict[str, ModelSignature]:
        """:meth:`signature_of` of each version, by version id. On a SQLite file in one query:
        each sqlite3 connection parses the whole schema before its first query, about 1 ms,
        which a gateway starting with many endpoints would pay once per version."""
        url = self.ws.settings.resolved_database_url
        ids = sorted({v.id for v in versions})
        if not ids:
            return {}
        rows = None
        if sqlite_file(url) is not None and all(_ULID.fullmatch(i) for i in ids):
            rows = read_sqlite(url, _SIGNATURES_SQL.format(ids=",".join(f"'{i}'" for i in ids)))
        if rows is not None:
            found = {row[0]: _sqlite_row(row[1:]) for row in rows}
        else:
            found = self._signature_rows(ids)
        return {v.id: _signature(v, found.get(v.id)) for v in versions}

    def _signature_row(self, version_id: str) -> tuple[Any, ...] | None:
        return self._signature_rows([version_id]).get(version_id)

    def _signature_rows(self, version_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        from sqlalchemy import select

        from modelyard.store.tables import ModelSignatureRow, SigningKeyRow

        s_, k = ModelSignatureRow, SigningKeyRow
        with self.ws.store.read() as s:
            found = s.execute(
                select(
                    s_.version_id,
                    s_.key_id,
                    s_.payload_digest,
                    s_.signature,
                    s_.signed_at,
                    s_.signed_by,
                    k.name,
                    k.public_key,
                    k.revoked_at,
                )
                .outerjoin(k, k.id == s_.key_id)
                .where(s_.version_id.in_(version_ids))
            ).all()
        return {row[0]: tuple(row[1:]) for row in found}

    def verify_version(self, name: str, version: int) -> SignatureCheck:
        """Check a version's signature and every stored file against its signed digest
        (reads each blob from the artifact store once)."""
        v = self.ws.registry.get_version(name, version)
        check = check_signature(v, self.signature_of(v), self.ws.settings.pinned_key_ids)
        if check.status == "invalid":
            return check
        named = _NamedBlobs(self.ws.artifacts, v)
        for digest in sorted(named.paths):
            try:
                for _ in self.ws.artifacts.open(digest):
                    pass
            except (ArtifactCorrupted, NotFound) as exc:
                reason = (
                    named.tampered(digest).detail
                    if isinstance(exc, ArtifactCorrupted)
                    else f"{v.uri}: file {named.paths[digest]} (blob {digest}) is missing from "
                    "the artifact store"
                )
                return check.model_copy(
                    update={"ok": False, "status": "tampered", "reason": reason}
                )
        return check

    def local_copy(self, version: ModelVersion, record: ModelSignature | None = None) -> Path:
        """The version's files on local disk, checked (see :func:`verified_dir`) against
        ``record``, its signature as :meth:`signatures_of` read it (None: read it now)."""
        settings = self.ws.settings
        return verified_dir(
            self.ws.artifacts,
            version,
            settings.cache_dir,
            self.signature_of(version) if record is None else record,
            require=settings.require_signed_models,
            pinned=settings.pinned_key_ids,
        )


def _check_key_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise InvalidInput(
            f"key name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit"
        )
    return name


__all__ = [
    "ModelSignature",
    "SignatureCheck",
    "Signer",
    "SigningKey",
    "SigningService",
    "canonical",
    "check_signature",
    "key_id_of",
    "parse_public_key",
    "refusal",
    "verified_dir",
    "version_payload",
]
