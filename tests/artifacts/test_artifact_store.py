"""The content-addressed artifact store, on a local directory and on a real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from pathlib import Path

import pytest

from modelyard.artifacts import ArtifactStore, digest_of_bytes, materialize
from modelyard.errors import ArtifactCorrupted, InvalidInput, NotFound, PayloadTooLarge

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **kw) -> ArtifactStore:
    if kind == "local":
        return ArtifactStore(str(tmp_path / "artifacts"), **kw)
    url = request.getfixturevalue("s3_server")
    root = f"s3://bucket/{uuid.uuid4().hex}"
    return ArtifactStore(root, storage_options={"endpoint_url": url}, **kw)


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ArtifactStore:
    return _make_store(kind, tmp_path, request)


def _overwrite_behind_the_store(store: ArtifactStore, digest: str, data: bytes) -> None:
    """Replace the stored bytes of ``digest`` without going through the store."""
    path = store._path(digest)
    if store.is_local:
        with open(path, "wb") as f:
            f.write(data)
    else:
        import boto3

        bucket, key = path.split("/", 1)
        endpoint = store.fs.client_kwargs.get("endpoint_url") or store.fs.endpoint_url
        boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=bucket, Key=key, Body=data)


def _tmp_entries(store: ArtifactStore) -> list[str]:
    tmp = f"{store.root}/tmp"
    if not store.fs.exists(tmp):
        return []
    return [p for p in store.fs.find(tmp) if not p.rstrip("/").endswith("/tmp")]


def test_round_trip_and_digest_format(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    digest = store.put(io.BytesIO(data))
    assert DIGEST.match(digest)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.size(digest) == len(data)
    assert store.get_bytes(digest) == data
    out = store.get_file(digest, tmp_path / "out" / "blob.bin")
    assert out.read_bytes() == data
    assert list(store.digests()) == [digest]
    assert _tmp_entries(store) == []


def test_identical_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    a = store.put_bytes(b"same bytes")
    src = tmp_path / "same.txt"
    src.write_bytes(b"same bytes")
    b = store.put_file(src)
    c = store.put_bytes(b"other bytes")
    assert a == b == digest_of_bytes(b"same bytes")
    assert c != a
    assert sorted(store.digests()) == sorted({a, c})


def test_expected_digest_mismatch_is_refused_and_leaves_nothing(store: ArtifactStore) -> None:
    wrong = digest_of_bytes(b"what the client meant to send")
    with pytest.raises(InvalidInput, match="hashes to"):
        store.put(io.BytesIO(b"what arrived"), expected=wrong)
    assert list(store.digests()) == []
    assert not store.exists(digest_of_bytes(b"what arrived"))
    assert _tmp_entries(store) == []
    # The right expectation is accepted.
    good = digest_of_bytes(b"what arrived")
    assert store.put(io.BytesIO(b"what arrived"), expected=good) == good


def test_size_limit_refuses_and_leaves_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = _make_store(kind, tmp_path, request, max_blob_bytes=1024 * 1024)
    big = os.urandom(1024 * 1024 + 1)
    with pytest.raises(PayloadTooLarge, match="limit"):
        store.put(io.BytesIO(big))
    assert list(store.digests()) == []
    assert not store.exists(digest_of_bytes(big))
    assert _tmp_entries(store) == []
    # Exactly at the limit is fine.
    ok = big[:-1]
    assert store.get_bytes(store.put_bytes(ok)) == ok


def test_corrupted_blob_is_detected(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    digest = store.put_bytes(data)
    flipped = bytes([data[0] ^ 0xFF]) + data[1:]  # same length, one byte of bit rot
    _overwrite_behind_the_store(store, digest, flipped)
    with pytest.raises(ArtifactCorrupted) as info:
        store.get_bytes(digest)
    message = str(info.value)
    assert digest in message and "does not match" in message
    dest = tmp_path / "dl" / "model.bin"
    with pytest.raises(ArtifactCorrupted):
        store.get_file(digest, dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial file either


def test_unknown_digest_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    unknown = digest_of_bytes(b"never stored")
    assert not store.exists(unknown)
    with pytest.raises(NotFound):
        store.get_bytes(unknown)
    with pytest.raises(NotFound):
        store.size(unknown)
    with pytest.raises(NotFound):
        store.get_file(unknown, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:",
        "sha256:abc",
        "md5:" + "0" * 64,
        "sha256:" + "G" * 64,
        "sha256:" + "A" * 64,  # upper case is not the canonical form
        "sha256:../../../../etc/passwd".ljust(71, "0"),
        "0" * 64,  # no prefix
    ],
)
def test_malformed_digest_is_invalid_input(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        store.get_bytes(bad)
    with pytest.raises(InvalidInput):
        store.exists(bad)


def test_materialize_writes_all_files(store: ArtifactStore, tmp_path: Path) -> None:
    files = {
        "model.skops": store.put_bytes(b"weights"),
        "sub/dir/vocab.txt": store.put_bytes(b"a\nb\n"),
    }
    dest = materialize(store, files, tmp_path / "cache" / "m1")
    assert (dest / "model.skops").read_bytes() == b"weights"
    assert (dest / "sub" / "dir" / "vocab.txt").read_bytes() == b"a\nb\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m1"]


def test_materialize_writes_nothing_when_one_file_is_bad(
    store: ArtifactStore, tmp_path: Path
) -> None:
    good = store.put_bytes(b"good file")
    bad = store.put_bytes(b"soon corrupted")
    _overwrite_behind_the_store(store, bad, b"SOON corrupted")
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactCorrupted):
        materialize(store, {"a.bin": good, "b.bin": bad}, cache / "m")
    assert not (cache / "m").exists()
    assert list(cache.iterdir()) == []  # no staging directory left behind
    missing = digest_of_bytes(b"missing")
    with pytest.raises(NotFound):
        materialize(store, {"a.bin": good, "z.bin": missing}, cache / "m")
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "rel", ["../x", "sub/../../x", "/etc/evil", "a/../../../x", "", ".", "a/.."]
)
def test_materialize_refuses_path_escaping_the_directory(
    store: ArtifactStore, tmp_path: Path, rel: str
) -> None:
    digest = store.put_bytes(b"payload")
    cache = tmp_path / "cache"
    with pytest.raises(InvalidInput, match="escapes"):
        materialize(store, {"ok.txt": digest, rel: digest}, cache / "m")
    assert not (cache / "m").exists()
    assert not (cache / "x").exists()
    assert list(cache.iterdir()) == []
