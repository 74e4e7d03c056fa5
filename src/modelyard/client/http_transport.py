"""The HTTP transport under every proxy: one httpx client, problem+json turned into errors.

A server's problem+json answer is raised again as the same
:class:`~modelyard.errors.ModelyardError` subclass, so a caller cannot tell an HTTP proxy's
error from the in-process service's.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from modelyard import errors, jsonio

M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


def _error_classes() -> dict[str, type[errors.ModelyardError]]:
    found: dict[str, type[errors.ModelyardError]] = {}
    pending: list[type[errors.ModelyardError]] = [errors.ModelyardError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.title, cls)
        pending.extend(cls.__subclasses__())
    return found


class HttpTransport:
    """An httpx client for one server, turning problem+json answers into exceptions."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._errors = _error_classes()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if "json" in kwargs:
            body = kwargs.pop("json")
            if body is not None:
                kwargs["content"] = jsonio.dumps(body)
                kwargs.setdefault("headers", {})["content-type"] = "application/json"
        try:
            try:
                response = self.http.request(method, API + path, **kwargs)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # A kept-alive connection the server closed as this request went out (it does
                # after a download it had to abort): a read is safe to send once more.
                if method not in ("GET", "HEAD"):
                    raise
                response = self.http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.ModelyardError(
                f"cannot reach the modelyard server at {self.url} ({exc}); "
                "is `modelyard server` running?"
            ) from None
        if response.status_code >= 400:
            self._raise(response)
        return response

    def _raise(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"title": "Error", "detail": response.text[:500] or response.reason_phrase}
        title = body.pop("title", "Error")
        detail = body.pop("detail", "")
        body.pop("type", None)
        body.pop("status", None)
        cls = self._errors.get(title)
        if cls is None or cls.status != response.status_code:
            err = errors.ModelyardError(detail or title, **body)
            err.status, err.title = response.status_code, title
            raise err
        if cls is errors.MissingExtra:
            raise errors.MissingExtra(body.get("package", "?"), body.get("extra", "?"))
        raise cls(detail, **body)

    def get(self, path: str, model: type[M], **params: Any) -> M:
        params = {k: v for k, v in params.items() if v is not None}
        return model.model_validate_json(self.request("GET", path, params=params).content)

    def send(self, method: str, path: str, model: type[M] | None, body: Any = None) -> Any:
        response = self.request(method, path, json=body)
        return None if model is None else model.model_validate_json(response.content)

    def close(self) -> None:
        self.http.close()


def _q(value: str) -> str:
    return quote(value, safe="")


def _dump(item: Any) -> Any:
    return item.model_dump(mode="json") if isinstance(item, BaseModel) else dict(item)
