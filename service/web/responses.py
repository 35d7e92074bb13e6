"""JSON responses rendered by orjson, numpy arrays included."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def milliseconds(timings: dict[str, float]) -> dict[str, float]:
    """Stage timings for a JSON body, in milliseconds."""
    return {stage: round(seconds * 1000, 3) for stage, seconds in timings.items()}


def server_timing(timings: dict[str, float]) -> str:
    """A Server-Timing header (milliseconds), which browsers' developer tools show."""
    return ", ".join(f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in timings.items())
