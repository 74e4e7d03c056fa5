"""The error hierarchy.

Every error a user can cause is a :class:`ModelyardError` subclass. Each maps to one HTTP
status (rendered as RFC 9457 problem+json by the API) and one CLI exit code. Messages say
what to fix, not what went wrong inside.
"""

from __future__ import annotations

from typing import Any


class ModelyardError(Exception):
    """Base of every error modelyard raises on purpose."""

    status: int = 500
    exit_code: int = 1
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        slug = self.title.lower().replace(" ", "-")
        return {
            "type": f"https://modelyard.dev/problems/{slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class InvalidInput(ModelyardError):
    """The request is well formed but its content is wrong."""

    status = 422
    exit_code = 2
    title = "Invalid input"


class BadRequest(ModelyardError):
    """The request cannot be parsed (malformed JSON, wrong content type...)."""

    status = 400
    exit_code = 2
    title = "Bad request"


class NotFound(ModelyardError):
    """The named thing does not exist."""

    status = 404
    exit_code = 3
    title = "Not found"


class AlreadyExists(ModelyardError):
    """A thing with that name or key exists already."""

    status = 409
    exit_code = 4
    title = "Already exists"


class Conflict(ModelyardError):
    """The request conflicts with the current state (e.g. changing an immutable value)."""

    status = 409
    exit_code = 4
    title = "Conflict"


class PayloadTooLarge(ModelyardError):
    """An upload or request body is over the configured limit."""

    status = 413
    exit_code = 2
    title = "Payload too large"


class Unauthenticated(ModelyardError):
    """No valid credentials were presented."""

    status = 401
    exit_code = 5
    title = "Unauthenticated"


class Forbidden(ModelyardError):
    """The caller's role does not allow this operation."""

    status = 403
    exit_code = 5
    title = "Forbidden"


class InvalidModel(InvalidInput):
    """A model file or directory is not what its format says it is."""

    title = "Invalid model"


class UntrustedModel(ModelyardError):
    """Loading would execute untrusted code (pickle); the caller must opt in with trusted=True."""

    status = 403
    exit_code = 5
    title = "Untrusted model"

    #: Every way to opt in, so that the message helps whichever door the model came through.
    HOW_TO_TRUST = (
        "if you trust its author, load it with trusted=True (SDK), --trusted (modelyard "
        "predict), or serve it with modelyard serve --trust-pickled "
        "(MODELYARD_TRUST_PICKLED_MODELS=true)"
    )


class MissingExtra(ModelyardError):
    """A framework needed for this model is not installed."""

    status = 501
    exit_code = 6
    title = "Missing dependency"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this model needs {package}, which is not installed: pip install 'modelyard[{extra}]'",
            package=package,
            extra=extra,
        )


class ArtifactCorrupted(ModelyardError):
    """A stored blob does not match its digest: the store was damaged outside modelyard."""

    status = 500
    exit_code = 7
    title = "Artifact corrupted"


class UnverifiedModel(ModelyardError):
    """A model version failed its signature or integrity check and is not loaded."""

    status = 403
    exit_code = 5
    title = "Unverified model"
