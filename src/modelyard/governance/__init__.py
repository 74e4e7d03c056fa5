"""Governance: identities, roles, tokens, the tamper-evident audit log and approvals."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.governance.approvals import Approval, ApprovalService
    from modelyard.governance.audit import AuditLog, VerifyResult, append_events
    from modelyard.governance.entities import (
        AuditRecord,
        Identity,
        IssuedToken,
        Role,
        Token,
        User,
    )
    from modelyard.governance.identity import (
        LOCAL_USER,
        Identities,
        TokenCache,
        TokenCheckUnavailable,
        bearer_secret,
    )

__all__ = [
    "LOCAL_USER",
    "Approval",
    "ApprovalService",
    "AuditLog",
    "AuditRecord",
    "Identities",
    "Identity",
    "IssuedToken",
    "Role",
    "Token",
    "TokenCache",
    "TokenCheckUnavailable",
    "User",
    "VerifyResult",
    "append_events",
    "bearer_secret",
]

#: The module of each name above. They load on first use: a gateway imports
#: governance.limits on its way to its first answer, before SQLAlchemy (see serving/plans.py).
_MODULES = {
    **dict.fromkeys(("Approval", "ApprovalService"), "approvals"),
    **dict.fromkeys(("AuditLog", "VerifyResult", "append_events"), "audit"),
    **dict.fromkeys(
        ("AuditRecord", "Identity", "IssuedToken", "Role", "Token", "User"), "entities"
    ),
    **dict.fromkeys(
        ("LOCAL_USER", "Identities", "TokenCache", "TokenCheckUnavailable", "bearer_secret"),
        "identity",
    ),
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"modelyard.governance.{module}"), name)
