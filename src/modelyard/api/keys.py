"""Signing routes: trusted keys, and the signatures of model versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from modelyard.api.deps import admin, member, viewer
from modelyard.api.requests import ApiRoute
from modelyard.governance.signing import KEY_NAME, ModelSignature, SignatureCheck, SigningKey
from modelyard.registry.uri import ModelName, VersionNumber
from modelyard.workspace import Workspace

router = APIRouter(tags=["signing"], route_class=ApiRoute)

KeyName = Annotated[str, Field(pattern=f"^{KEY_NAME.pattern}$")]
KeyId = Annotated[str, Field(pattern="^[0-9a-f]{16}$")]


class KeyAdd(BaseModel):
    name: KeyName | None = Field(default=None, description="default: 'default'")
    public_key: str | None = Field(
        default=None,
        max_length=4096,
        description="a public key made elsewhere, in PEM (as `modelyard keys export` prints "
        "it), to trust; null: make a key pair on the server",
    )


@router.get("/keys", response_model=list[SigningKey])
def list_keys(ws: Workspace = Depends(viewer)) -> list[SigningKey]:
    """Every key, trusted or revoked; ``signs``: the server signs new versions with it."""
    return ws.signing.list_keys()


@router.post("/keys", status_code=201, response_model=SigningKey)
def add_key(body: KeyAdd, ws: Workspace = Depends(admin)) -> SigningKey:
    """Trust a public key made elsewhere, or (without ``public_key``) make a key pair on the
    server (the private key in its home, mode 0600) and trust it."""
    if body.public_key is None:
        return ws.signing.create_key(body.name)
    return ws.signing.trust_key(body.public_key, body.name or "")


@router.get("/keys/{key_id}", response_model=SigningKey)
def get_key(key_id: KeyId, ws: Workspace = Depends(viewer)) -> SigningKey:
    return ws.signing.get_key(key_id)


@router.post("/keys/{key_id}/revoke", response_model=SigningKey)
def revoke_key(key_id: KeyId, ws: Workspace = Depends(admin)) -> SigningKey:
    """Stop trusting a key; what it signed is refused under require_signed_models."""
    return ws.signing.revoke_key(key_id)


@router.get("/models/{name}/versions/{version}/signature", response_model=ModelSignature)
def get_signature(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(viewer)
) -> ModelSignature:
    """The version's signature and its key's standing (``signed`` false: none)."""
    return ws.registry.get_signature(name, version)


@router.post("/models/{name}/versions/{version}/signature", response_model=ModelSignature)
def sign_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(member)
) -> ModelSignature:
    """Sign the version with the server's signing key (or re-sign it after a rotation);
    needs the write permission on the model."""
    return ws.registry.sign_version(name, version)


@router.get("/models/{name}/versions/{version}/signature/verify", response_model=SignatureCheck)
def verify_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(viewer)
) -> SignatureCheck:
    """Check the signature and every stored file of the version against the signed digests."""
    return ws.registry.verify_version(name, version)
