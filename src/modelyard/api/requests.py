"""How the API reads a JSON body: standard JSON that is valid Unicode.

Python's ``json`` module takes ``"\\ud800"`` (a lone surrogate) into a ``str`` that no
database or encoder can store, which ended as a 500 far from the request. Here such a body
is a 400. ``json`` still parses the body (not orjson, which reads integers beyond 64 bits as
floats, silently): integers stay exact, for a field to refuse with its range or to keep as
they are, and ``NaN`` literals, which some clients send for metric values, stay readable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, WithJsonSchema, create_model
from pydantic.fields import FieldInfo


def _not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate
        return True
    return False


def _first_string(value: Any, bad: Callable[[str], bool]) -> str | None:
    """The first string in ``value`` (keys included) that is ``bad``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if bad(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


# A surrogate can only come as a \uD800-\uDFFF escape: in UTF-8 it does not decode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def loads(body: bytes) -> Any:
    """Parse a request body; :class:`json.JSONDecodeError` if it is not JSON in UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"byte {exc.start} is not UTF-8", "", 0) from None
    value = json.loads(text)
    if _SURROGATE_ESCAPE.search(body):  # rare: clients that escape every non-ASCII character
        bad = _first_string(value, _not_unicode)
        if bad is not None:
            raise json.JSONDecodeError(
                f"the string {bad!r} holds an unpaired surrogate, which is not Unicode", text, 0
            )
    return value


class ApiRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class ApiRoute(APIRoute):
    """A route whose request parses its JSON body with :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(ApiRequest(request.scope, request.receive))

        return handler


def patch_body(spec: type[BaseModel], name: str, *, fixed: tuple[str, ...]) -> type[BaseModel]:
    """The body of a PATCH of a ``spec``: any of its fields but ``fixed``, none required.

    Derived rather than written out, so that a field added to the spec can be changed too.
    The route passes on only the fields sent (``model_dump(exclude_unset=True)``); the
    domain checks the changed spec as a whole.
    """
    fields: dict[str, Any] = {
        field: (
            info.annotation,
            FieldInfo.merge_field_infos(info, default=None) if info.is_required() else info,
        )
        for field, info in spec.model_fields.items()
        if field not in fixed
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def documented(
    pattern: re.Pattern[str] | str, description: str = "", *, max_length: int | None = None
) -> WithJsonSchema:
    """The schema of a string the domain checks against ``pattern``.

    Declared for clients (and the OpenAPI document), not checked here: the domain's own
    check answers, with its message saying what to fix.
    """
    schema: dict[str, Any] = {
        "type": "string",
        "pattern": pattern if isinstance(pattern, str) else pattern.pattern,
    }
    if max_length is not None:
        schema["maxLength"] = max_length
    if description:
        schema["description"] = description
    return WithJsonSchema(schema)
