"""Governance: identities, roles, tokens, the tamper-evident audit log and approvals."""

from modelyard.governance.approvals import Approval, ApprovalService
from modelyard.governance.audit import AuditLog, VerifyResult, append_events
from modelyard.governance.entities import AuditRecord, Identity, IssuedToken, Role, Token, User
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
