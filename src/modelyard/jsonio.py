"""JSON as the API and the SDK write it: standard JSON, NaN and ±Infinity as strings.

Protobuf JSON (and so MLflow) does the same; pydantic parses the strings back to floats.
"""

from __future__ import annotations

import json
import math
from typing import Any


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
