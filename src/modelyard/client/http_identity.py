"""Identities, prediction limits and the audit log over HTTP.

Each class mirrors its domain service method for method (see ``http.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

from modelyard.client.http_transport import HttpTransport, _q
from modelyard.governance import AuditRecord, Identity, IssuedToken, Token, User
from modelyard.governance.audit import Checkpoint
from modelyard.governance.limits import PredictionLimit
from modelyard.page import Page


class VerifyReport(BaseModel):
    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoint: str = ""


class HttpIdentities:
    """:class:`~modelyard.governance.Identities` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def whoami(self) -> Identity:
        return self.t.get("/whoami", Identity)

    def create_user(self, name: str, role: str = "viewer") -> User:
        return self.t.send("POST", "/users", User, {"name": name, "role": str(role)})

    def list_users(self) -> list[User]:
        return TypeAdapter(list[User]).validate_json(self.t.request("GET", "/users").content)

    def set_role(self, name: str, role: str) -> User:
        return self.t.send("PATCH", f"/users/{_q(name)}", User, {"role": str(role)})

    def disable_user(self, name: str) -> User:
        return self.t.send("POST", f"/users/{_q(name)}/disable", User)

    def create_token(
        self,
        user: str,
        *,
        name: str = "",
        expires_in_days: int | None = None,
        endpoints: list[str] | None = None,
    ) -> IssuedToken:
        body = {
            "user": user,
            "name": name,
            "expires_in_days": expires_in_days,
            "endpoints": endpoints,
        }
        return self.t.send("POST", "/tokens", IssuedToken, body)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        params = {"user": user} if user else {}
        return TypeAdapter(list[Token]).validate_json(
            self.t.request("GET", "/tokens", params=params).content
        )

    def revoke_token(self, token_id: str) -> Token:
        return self.t.send("DELETE", f"/tokens/{_q(token_id)}", Token)


class HttpLimits:
    """:class:`~modelyard.governance.limits.LimitService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def set(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        rate: float | int | str | None = None,
        burst: int | None = None,
        daily: int | None = None,
    ) -> PredictionLimit:
        body = {"endpoint": endpoint, "token": token, "rate": rate, "burst": burst, "daily": daily}
        return self.t.send("PUT", "/limits", PredictionLimit, body)

    def list(
        self, *, endpoint: str | None = None, token: str | None = None
    ) -> list[PredictionLimit]:
        params = {k: v for k, v in {"endpoint": endpoint, "token": token}.items() if v is not None}
        response = self.t.request("GET", "/limits", params=params)
        return TypeAdapter(list[PredictionLimit]).validate_json(response.content)

    def get(self, limit_id: str) -> PredictionLimit:
        return self.t.get(f"/limits/{_q(limit_id)}", PredictionLimit)

    def delete(self, limit_id: str) -> None:
        self.t.request("DELETE", f"/limits/{_q(limit_id)}")


class HttpAudit:
    """:class:`~modelyard.governance.AuditLog` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def list(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditRecord]:
        from modelyard.page import encode_token

        return self.t.get(
            "/audit",
            Page[AuditRecord],
            entity_type=entity_type,
            entity_id=entity_id,
            actor=actor,
            action=action,
            limit=limit,
            page_token=encode_token(offset) if offset else None,
        )

    def verify(self, checkpoint: Checkpoint | Mapping[str, Any] | None = None) -> VerifyReport:
        if checkpoint is None:
            return self.t.get("/audit/verify", VerifyReport)
        body = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.parse(checkpoint)
        return self.t.send("POST", "/audit/verify", VerifyReport, body.model_dump(mode="json"))

    def checkpoint(self) -> Checkpoint:
        return self.t.send("POST", "/audit/checkpoint", Checkpoint)
