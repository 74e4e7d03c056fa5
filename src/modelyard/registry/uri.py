"""Model URIs: ``models:/name/3``, ``models:/name@alias``, ``models:/name/latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, WithJsonSchema

from modelyard.errors import InvalidInput
from modelyard.jsonio import NotABoolean
from modelyard.store.schema import MAX_INTEGER

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
ALIAS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RESERVED_ALIASES = {"latest"}
#: The highest version number a model can reach (its column is a 32-bit integer).
MAX_VERSION = MAX_INTEGER

#: A version number as a request names it.
VersionNumber = Annotated[
    int,
    Field(ge=1, le=MAX_VERSION, description=f"a version number, 1 to {MAX_VERSION}"),
    NotABoolean,
]
# How requests name models, aliases and versions, for the API's schema; the functions below
# check them (with messages that say what to fix).
ModelName = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": MODEL_NAME.pattern,
            "description": "up to 256 letters, digits, '.', '_' or '-'",
        }
    ),
]
AliasName = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ALIAS_NAME.pattern,
            "not": {"enum": sorted(RESERVED_ALIASES)},
            "description": "up to 64 letters, digits, '_' or '-'",
        }
    ),
]
_NAME, _ALIAS = MODEL_NAME.pattern[1:-1], ALIAS_NAME.pattern[1:-1]
ModelUri = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^(models:/)?{_NAME}(@{_ALIAS}|/latest|/0*[1-9][0-9]{{0,8}})?$",
            "description": "models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest",
        }
    ),
]


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


def check_version(version: int) -> int:
    """``version`` if it can name a version (1 to :data:`MAX_VERSION`), else InvalidInput."""
    if not 1 <= version <= MAX_VERSION:
        raise InvalidInput(f"version must be between 1 and {MAX_VERSION}, got {version}")
    return version


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
    digits = tail.lstrip("0")
    if tail.isascii() and tail.isdigit() and digits:
        if len(digits) > len(str(MAX_VERSION)):  # and int() refuses 4,300 digits or more
            raise InvalidInput(f"version must be between 1 and {MAX_VERSION} in {uri!r}")
        return ModelRef(name, version=check_version(int(digits)))
    raise InvalidInput(
        f"{uri!r} is not a model URI; use models:/NAME/VERSION, models:/NAME@ALIAS "
        "or models:/NAME/latest"
    )
