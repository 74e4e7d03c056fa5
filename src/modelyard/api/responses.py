"""The API's JSON responses."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from modelyard import jsonio


class ApiJSONResponse(JSONResponse):
    """Standard JSON even for NaN and infinite metric values (see :mod:`modelyard.jsonio`)."""

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)
