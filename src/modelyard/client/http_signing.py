"""Signing keys over HTTP (signatures of versions are on ``HttpRegistry``).

Mirrors :class:`~modelyard.governance.signing.SigningService` method for method (see
``http.py``). Keys made here live on the server, which signs what is registered through it.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from modelyard.client.http import HttpTransport, _q
from modelyard.governance.signing import SigningKey


class HttpKeys:
    """:class:`~modelyard.governance.signing.SigningService`'s keys over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def create_key(self, name: str | None = None) -> SigningKey:
        return self.t.send("POST", "/keys", SigningKey, {"name": name})

    def trust_key(self, public_key: str, name: str) -> SigningKey:
        body = {"name": name, "public_key": public_key}
        return self.t.send("POST", "/keys", SigningKey, body)

    def list_keys(self) -> list[SigningKey]:
        response = self.t.request("GET", "/keys")
        return TypeAdapter(list[SigningKey]).validate_json(response.content)

    def get_key(self, key_id: str) -> SigningKey:
        return self.t.get(f"/keys/{_q(key_id)}", SigningKey)

    def export_key(self, key_id: str) -> str:
        return self.get_key(key_id).public_key

    def revoke_key(self, key_id: str) -> SigningKey:
        return self.t.send("POST", f"/keys/{_q(key_id)}/revoke", SigningKey)
