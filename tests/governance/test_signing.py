"""Signed model versions: keys, a signature at registration, a check at every load."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from modelyard.artifacts import digest_of_file, parse_digest
from modelyard.config import Settings
from modelyard.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, UnverifiedModel
from modelyard.formats import MANIFEST_NAME
from modelyard.registry import ModelVersion
from modelyard.store.tables import ModelVersionRow, SigningKeyRow
from modelyard.workspace import Workspace


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import save_model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("signing") / "model"
    save_model(LogisticRegression().fit(x, y), path, input_example=x[:3])
    return path


def register(ws: Workspace, model_dir: Path, name: str = "fraud") -> ModelVersion:
    for p in model_dir.rglob("*"):
        if p.is_file():
            ws.artifacts.put_file(p)
    return ws.registry.create_version(name, digest_of_file(model_dir / MANIFEST_NAME))


def blob_path(ws: Workspace, digest: str) -> Path:
    hexpart = parse_digest(digest)
    root = Path(ws.settings.resolved_artifact_root)
    return root / "blobs" / "sha256" / hexpart[:2] / hexpart[2:]


def model_file(version: ModelVersion) -> tuple[str, str]:
    """(path, digest) of the version's largest file."""
    files = version.manifest["files"]
    path = max(files, key=lambda p: files[p]["size"])
    return path, files[path]["digest"]


def forget_local_copies(ws: Workspace) -> None:
    """As on a fresh machine: the next load fetches the files from the artifact store."""
    shutil.rmtree(ws.settings.cache_dir / "models", ignore_errors=True)


def tamper(ws: Workspace, digest: str) -> bytes:
    """Overwrite a blob under the artifact root (as someone with access to the bucket would);
    returns the original bytes."""
    path = blob_path(ws, digest)
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(original[:-16] + b"\0" * 16)
    return original


def require_signed(ws: Workspace, on: bool = True) -> None:
    ws.settings.require_signed_models = on


def test_sign_and_verify_round_trip(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    unsigned = register(ws, model_dir)
    assert ws.registry.get_signature("fraud", 1).signed is False
    key = ws.signing.create_key()
    assert (key.name, key.signs, key.revoked_at) == ("default", True, None)
    assert len(key.id) == 16 and key.public_key.startswith("-----BEGIN PUBLIC KEY-----")
    private = ws.settings.resolved_home / "keys" / "default.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    v2 = register(ws, model_dir)
    signature = ws.registry.get_signature("fraud", v2.version)
    assert signature.signed and signature.key_id == key.id
    assert (signature.key_name, signature.key_status, signature.signed_by) == (
        "default",
        "trusted",
        "local",
    )
    check = ws.registry.verify_version("fraud", v2.version)
    assert (check.ok, check.status, check.key_id) == (True, "verified", key.id)
    assert ws.registry.verify_version("fraud", unsigned.version).status == "unsigned"
    forget_local_copies(ws)
    assert ws.registry.load_model("models:/fraud/2") is not None

    actions = [(r.action, r.entity_id) for r in reversed(ws.audit.list(limit=50).items)]
    assert ("key.create", key.id) in actions
    created = actions.index(("version.create", "fraud/2"))
    assert actions[created + 1] == ("version.sign", "fraud/2")  # in the same transaction
    assert ws.audit.verify().ok


def test_a_tampered_blob_is_refused_naming_model_version_and_file(
    any_workspace: Workspace, model_dir: Path
) -> None:
    ws = any_workspace
    ws.signing.create_key()
    v = register(ws, model_dir)
    path, digest = model_file(v)
    tamper(ws, digest)
    forget_local_copies(ws)
    for load in (lambda: ws.registry.load_model(v.uri), lambda: ws.registry.local_path(v)):
        with pytest.raises(UnverifiedModel) as refused:
            load()
        detail = refused.value.detail
        assert "models:/fraud/1" in detail and path in detail and digest in detail
        assert refused.value.status == 403
    check = ws.registry.verify_version("fraud", 1)
    assert (check.ok, check.status) == (False, "tampered")
    assert path in check.reason
    assert not (ws.settings.cache_dir / "models" / parse_digest(v.manifest_digest)).exists()


def test_a_tampered_local_copy_is_refused(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    ws.signing.create_key()
    v = register(ws, model_dir)
    local = ws.registry.local_path(v)
    path, _ = model_file(v)
    (local / path).write_bytes(b"not the model")
    with pytest.raises(InvalidInput, match="does not match its digest"):
        ws.registry.load_model(v.uri)
    (local / MANIFEST_NAME).write_text((local / MANIFEST_NAME).read_text() + " ")
    with pytest.raises(UnverifiedModel, match="not the signed manifest"):
        ws.registry.load_model(v.uri)


def test_a_changed_version_record_no_longer_verifies(
    any_workspace: Workspace, model_dir: Path
) -> None:
    """Pointing a signed version at other files in the database is refused, required or not."""
    ws = any_workspace
    ws.signing.create_key()
    v = register(ws, model_dir)
    path, _ = model_file(v)
    other = ws.artifacts.put_bytes(b"a different model")
    manifest = {**v.manifest, "files": {**v.manifest["files"], path: {"digest": other, "size": 17}}}
    with ws.store.engine.begin() as conn:
        conn.execute(
            update(ModelVersionRow).where(ModelVersionRow.id == v.id).values(manifest=manifest)
        )
    forget_local_copies(ws)
    check = ws.registry.verify_version("fraud", 1)
    assert (check.ok, check.status) == (False, "invalid")
    with pytest.raises(UnverifiedModel, match=r"not the ones key .* signed"):
        ws.registry.load_model("models:/fraud/1")


def test_unsigned_versions_load_unless_signatures_are_required(
    any_workspace: Workspace, model_dir: Path
) -> None:
    ws = any_workspace
    register(ws, model_dir)
    assert ws.registry.load_model("models:/fraud/1") is not None
    require_signed(ws)
    with pytest.raises(UnverifiedModel) as refused:
        ws.registry.load_model("models:/fraud/1")
    assert refused.value.detail.startswith("models:/fraud/1 is not signed by a trusted key")
    assert "`modelyard models sign fraud 1`" in refused.value.detail
    assert "MODELYARD_REQUIRE_SIGNED_MODELS=false" in refused.value.detail
    with pytest.raises(Conflict, match="keys create"):
        ws.registry.sign_version("fraud", 1)  # no key yet
    key = ws.signing.create_key()
    signed = ws.registry.sign_version("fraud", 1)  # a version registered before the key
    assert (signed.key_id, signed.public_key) == (key.id, key.public_key)
    assert ws.registry.load_model("models:/fraud/1") is not None


def test_revoked_key_is_refused_and_rotation_re_signs(
    any_workspace: Workspace, model_dir: Path
) -> None:
    ws = any_workspace
    old = ws.signing.create_key(name="2026-q4")
    register(ws, model_dir)
    new = ws.signing.create_key(name="2027-q1")  # the newest key signs from now on
    assert [(k.name, k.signs) for k in ws.signing.list_keys()] == [
        ("2026-q4", False),
        ("2027-q1", True),
    ]
    register(ws, model_dir)
    assert ws.registry.get_signature("fraud", 1).key_id == old.id
    assert ws.registry.get_signature("fraud", 2).key_id == new.id
    require_signed(ws)
    assert ws.registry.load_model("models:/fraud/1") is not None  # old key still trusted

    revoked = ws.signing.revoke_key(old.id)
    assert revoked.revoked_at is not None and not revoked.signs
    with pytest.raises(Conflict, match="revoked already"):
        ws.signing.revoke_key(old.id)
    assert ws.registry.get_signature("fraud", 1).key_status == "revoked"
    check = ws.registry.verify_version("fraud", 1)
    assert (check.ok, check.status) == (False, "untrusted_key")
    assert "revoked" in check.reason
    with pytest.raises(UnverifiedModel, match=r"revoked.*models sign fraud 1"):
        ws.registry.load_model("models:/fraud/1")
    assert ws.registry.load_model("models:/fraud/2") is not None
    require_signed(ws, False)
    assert ws.registry.load_model("models:/fraud/1") is not None  # not required: a warning

    require_signed(ws)
    assert ws.registry.sign_version("fraud", 1).key_id == new.id
    assert ws.registry.load_model("models:/fraud/1") is not None
    assert [r.action for r in ws.audit.list(entity_id="fraud/1").items][:1] == ["version.sign"]


def test_a_signature_by_an_unknown_key(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    key = ws.signing.create_key()
    register(ws, model_dir)
    with ws.store.engine.begin() as conn:
        conn.execute(delete(SigningKeyRow).where(SigningKeyRow.id == key.id))
    signature = ws.registry.get_signature("fraud", 1)
    assert (signature.key_status, signature.public_key) == ("unknown", None)
    assert ws.registry.verify_version("fraud", 1).status == "untrusted_key"
    require_signed(ws)
    with pytest.raises(UnverifiedModel, match="does not trust"):
        ws.registry.load_model("models:/fraud/1")


def test_export_and_trust_a_key_in_another_workspace(
    any_workspace: Workspace, tmp_path: Path, model_dir: Path
) -> None:
    ws = any_workspace
    key = ws.signing.create_key(name="ci")
    other = Workspace.open(Settings(home=tmp_path / "other"))
    try:
        trusted = other.signing.trust_key(ws.signing.export_key(key.id), "ci-from-elsewhere")
        assert (trusted.id, trusted.signs) == (key.id, False)  # no private key here
        assert other.signing.signer() is None
        with pytest.raises(AlreadyExists):
            other.signing.trust_key(key.public_key, "again")
        with pytest.raises(InvalidInput, match="PEM"):
            other.signing.trust_key("not a key", "junk")
        with pytest.raises(InvalidInput, match="key name"):
            other.signing.trust_key(key.public_key, "bad name!")
    finally:
        other.close()


def test_a_configured_signing_key(
    any_workspace: Workspace, tmp_path: Path, model_dir: Path
) -> None:
    ws = any_workspace
    path = tmp_path / "vault" / "signing.pem"
    ws.settings.signing_key = path
    with pytest.raises(InvalidInput, match="does not exist"):
        register(ws, model_dir)  # misconfigured: refused, not silently unsigned
    key = ws.signing.create_key(name="vault")
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (ws.settings.resolved_home / "keys" / "vault.pem").exists()
    with pytest.raises(AlreadyExists):
        ws.signing.create_key(name="another")  # MODELYARD_SIGNING_KEY's file exists
    v = register(ws, model_dir)
    assert ws.registry.get_signature("fraud", v.version).key_id == key.id
    ws.signing.revoke_key(key.id)
    with pytest.raises(Conflict, match="was revoked"):
        register(ws, model_dir)


def test_both_sdk_transports_sign_verify_and_refuse(
    client, workspace: Workspace, model_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    key = client.keys.create_key(name="sdk")
    assert [k.id for k in client.keys.list_keys()] == [key.id]
    assert client.keys.export_key(key.id) == key.public_key
    v = client.register_model(model_dir, "fraud")
    signature = client.registry.get_signature("fraud", v.version)
    assert (signature.signed, signature.key_id) == (True, key.id)
    assert client.registry.verify_version("fraud", v.version).ok
    assert client.registry.sign_version("fraud", v.version).key_id == key.id
    assert client.load_model(v.uri) is not None

    path, digest = model_file(v)
    tamper(workspace, digest)
    forget_local_copies(workspace)
    shutil.rmtree(client.settings.cache_dir / "models", ignore_errors=True)
    with pytest.raises(UnverifiedModel, match=f"models:/fraud/1: file {path}"):
        client.load_model(v.uri)
    check = client.registry.verify_version("fraud", v.version)
    assert (check.ok, check.status) == (False, "tampered")
    assert client.keys.revoke_key(key.id).revoked_at is not None
    assert client.registry.get_signature("fraud", 1).key_status == "revoked"


def test_cli_keys_sign_and_verify(run, tmp_path: Path, model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert "registered fraud version 1" in run("models", "register", "fraud", str(model_dir)).stdout
    unsigned = run("models", "verify", "fraud", "1", ok=False)
    assert (
        unsigned.returncode == 1 and "unsigned: models:/fraud/1 has no signature" in unsigned.stdout
    )
    assert run("models", "sign", "fraud", "1", ok=False).returncode == 4  # no key yet
    created = run("keys", "create", "--name", "2026-q4").stdout
    key_id = created.split()[1]
    assert f"key {key_id} (2026-q4) created and trusted" in created
    assert "signed with key" in run("models", "sign", "fraud", "1").stdout
    verified = run("models", "verify", "fraud", "1").stdout
    assert f"models:/fraud/1: ok, signed with key {key_id} (2026-q4) by local" in verified
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert [(k["id"], k["signs"]) for k in listed] == [(key_id, True)]
    pem = run("keys", "export", key_id).stdout
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and pem.endswith(
        "-----END PUBLIC KEY-----\n"
    )
    (tmp_path / "k.pub").write_text(pem)
    again = run("keys", "trust", str(tmp_path / "k.pub"), "--name", "copy", ok=False)
    assert again.returncode == 4 and "trusted already" in again.stderr
    assert f"key {key_id} (2026-q4) revoked" in run("keys", "revoke", key_id).stdout
    revoked = run("models", "verify", "fraud", "1", ok=False)
    assert revoked.returncode == 1 and "untrusted_key" in revoked.stdout


def test_signing_and_keys_need_their_permissions(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    ws.signing.create_key()
    register(ws, model_dir)
    ws.identities.create_user("vi", "viewer")
    viewer = ws.as_actor("vi")
    with pytest.raises(Forbidden, match="vi may not sign versions"):
        viewer.registry.sign_version("fraud", 1)
    with pytest.raises(Forbidden, match="vi may not create signing keys"):
        viewer.signing.create_key(name="mine")
    with pytest.raises(Forbidden):
        viewer.signing.revoke_key(ws.signing.list_keys()[0].id)
    assert viewer.registry.verify_version("fraud", 1).ok  # reading is open to viewers


def test_a_swapped_key_record_and_pinned_key_ids(any_workspace: Workspace, model_dir: Path) -> None:
    """Someone with write access to the database swaps a trusted key's public key for their
    own (and re-signs): the key id no longer matches the key. Pinning key ids in the settings
    keeps keys added to the store out."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from modelyard.governance.signing import public_pem
    from modelyard.store.tables import SigningKeyRow

    ws = any_workspace
    key = ws.signing.create_key()
    register(ws, model_dir)
    assert ws.registry.verify_version("fraud", 1).ok
    ws.settings.trusted_key_ids = "0123456789abcdef"  # pinned: not this workspace's key
    check = ws.registry.verify_version("fraud", 1)
    assert (check.ok, check.status) == (False, "untrusted_key")
    assert "MODELYARD_TRUSTED_KEY_IDS" in check.reason
    ws.settings.trusted_key_ids = key.id
    assert ws.registry.verify_version("fraud", 1).ok
    forged = public_pem(Ed25519PrivateKey.generate().public_key())
    with ws.store.write("mallory") as tx:
        tx.session.get(SigningKeyRow, key.id).public_key = forged
    check = ws.registry.verify_version("fraud", 1)
    assert (check.ok, check.status) == (False, "invalid")
    assert "the key record was altered" in check.reason


def test_re_signing_what_no_longer_verifies_takes_an_admin(
    any_workspace: Workspace, model_dir: Path
) -> None:
    ws = any_workspace
    ws.signing.create_key()
    v = register(ws, model_dir)
    ws.identities.create_user("ed", "editor")
    ed = ws.as_actor("ed")
    assert ed.registry.sign_version("fraud", 1).signed  # still verifies: a rotation's re-sign
    original = tamper(ws, model_file(v)[1])
    with pytest.raises(Forbidden, match="ed may not re-sign a version that does not verify"):
        ed.registry.sign_version("fraud", 1)
    assert ws.registry.verify_version("fraud", 1).status == "tampered"
    blob_path(ws, model_file(v)[1]).write_bytes(original)
    assert ed.registry.sign_version("fraud", 1).signed
