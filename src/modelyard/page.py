"""Pagination shared by every list operation: an opaque token over an offset."""

from __future__ import annotations

import base64
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, Field

from modelyard.errors import InvalidInput
from modelyard.store.schema import MAX_BIGINT

T = TypeVar("T")

MAX_LIMIT = 1000

#: How many items a page holds, as a request asks for it.
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"items per page, 1 to {MAX_LIMIT}")]


class Page(BaseModel, Generic[T]):
    """One page of results and the token for the next, if any."""

    items: list[T]
    next_page_token: str | None = None

    @classmethod
    def of(cls, items: list[T], offset: int, limit: int, *, more: bool) -> Page[T]:
        token = encode_token(offset + limit) if more else None
        return cls(items=items, next_page_token=token)


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_token(token: str | None) -> int:
    """The offset a page token stands for; :class:`InvalidInput` if it was not ours."""
    if not token:
        return 0
    try:
        kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        offset = int(value)
        # A token we issued never points past what a 64-bit OFFSET (plus a page) holds.
        if kind != "o" or not 0 <= offset <= MAX_BIGINT - MAX_LIMIT - 1:
            raise ValueError
    except ValueError:
        raise InvalidInput(
            "page_token is not valid (out of date, or not made by this server): pass the "
            "next_page_token of the previous page, or start again from the first page"
        ) from None
    return offset


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit
