"""Model URIs: ``models:/name/3``, ``models:/name@alias``, ``models:/name/latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.errors import InvalidInput

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
ALIAS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RESERVED_ALIASES = {"latest"}


@dataclass(frozen=True)
class ModelRef:
    """A parsed model URI: a name plus exactly one of version, alias, or latest."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def latest(self) -> bool:
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version if self.version else 'latest'}"


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise InvalidInput(
            f"model name {name!r} is not valid; use up to 256 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_NAME.match(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(
            f"alias {alias!r} is not valid; use up to 64 letters, digits, '_' or '-', starting "
            "with a letter ('latest' is reserved)"
        )
    return alias


def parse_model_uri(uri: str) -> ModelRef:
    """Parse ``models:/name[/version|/latest|@alias]``; a bare ``name`` means latest."""
    rest = uri.removeprefix("models:/") if uri.startswith("models:/") else uri
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return ModelRef(check_model_name(name), alias=check_alias(alias))
    name, _, tail = rest.partition("/")
    check_model_name(name)
    if tail in ("", "latest"):
        return ModelRef(name)
    if tail.isdigit() and int(tail) > 0:
        return ModelRef(name, version=int(tail))
    raise InvalidInput(
        f"{uri!r} is not a model URI; use models:/NAME/VERSION, models:/NAME@ALIAS "
        "or models:/NAME/latest"
    )
