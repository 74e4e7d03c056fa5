"""JSON as the API and the SDK write it: standard JSON, NaN and ±Infinity as strings.

Protobuf JSON (and so MLflow) does the same; pydantic parses the strings back to floats.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """``value`` as compact standard JSON."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:  # rare: only payloads carrying non-finite floats
        text = json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")  # pydantic alone reads true as 1
    return value


#: Refuses a boolean where a number is due. Bounds go before it, as in
#: ``Annotated[int, Field(gt=0), NotABoolean] | None``: after it, or on an optional field, pydantic
#: can no longer state them in the JSON schema.
NotABoolean = BeforeValidator(_not_a_boolean)
#: Numbers as a JSON body carries them: ``3.0`` is an integer (as JSON Schema says), ``true``
#: is not one.
JsonInt = Annotated[int, NotABoolean]
JsonFloat = Annotated[float, NotABoolean]


def _iso_time(value: Any) -> Any:
    if isinstance(value, int | float):  # bools too; pydantic alone reads 0.5 as Unix time
        raise ValueError("give a time as ISO 8601 text, e.g. 2026-01-31T00:00:00Z")
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time; use ISO 8601, e.g. 2026-01-31T00:00:00Z"
        ) from None
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{value!r} is out of range once in UTC") from None


#: A time as a request writes it: ISO 8601 text (no offset: UTC), read as a UTC datetime.
JsonTime = Annotated[datetime, BeforeValidator(_iso_time)]
