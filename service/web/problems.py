"""One error shape for every endpoint: RFC 9457 ``application/problem+json``.

A problem has ``type`` (``urn:revival:problem:<code>``, one per row of :data:`PROBLEMS`),
``title`` (fixed per type), ``status``, ``detail`` (this occurrence, naming the field and
the allowed range) and, for input errors, ``errors``: one entry per bad field with its
``field`` path (``events[3].ts``), JSON ``pointer`` (``/events/3/ts``) and ``detail``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

__all__ = [
    "MEDIA_TYPE",
    "PROBLEMS",
    "FieldError",
    "Problem",
    "field_errors",
    "problem_body",
    "problem_response",
    "problem_status",
    "problem_type",
]

MEDIA_TYPE = "application/problem+json"

# code -> (status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    "malformed_request": (400, "The body is not a single JSON object"),
    "unauthorized": (401, "A valid API key is required"),
    "forbidden": (403, "The API key lacks the scope this endpoint needs"),
    "unknown_customer": (404, "Unknown customer"),
    "unknown_job": (404, "Unknown retraining job"),
    "unknown_key": (404, "Unknown API key"),
    "request_timeout": (408, "The request body did not arrive in time"),
    "conflict": (409, "The request conflicts with stored state"),
    "payload_too_large": (413, "The request body is too large"),
    "unsupported_media_type": (415, "Only application/json bodies are accepted"),
    "invalid_request": (422, "The request is not valid"),
    "unknown_campaign": (422, "Unknown campaign"),
    "rejected": (422, "The request cannot be acted on"),
    "rate_limited": (429, "Too many requests for this API key"),
    "internal_error": (500, "Internal server error"),
    "unavailable": (503, "The service cannot answer now"),
}


def problem_type(code: str) -> str:
    return f"urn:revival:problem:{code}"


class FieldError(BaseModel):
    field: str = Field(description="path of the field, e.g. events[3].ts")
    pointer: str = Field(description="JSON pointer into the request body, e.g. /events/3/ts")
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details (the body of every 4xx/5xx response)."""

    type: str = Field(description="urn:revival:problem:<code>")
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


def _path(loc: Sequence[str | int]) -> tuple[str, str]:
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    pointer = "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc)
    return field, pointer


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic error as ``errors[]`` entries (the input itself is never echoed)."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [p for p in err["loc"] if p not in ("function-after", "function-before")]
        field, pointer = _path(loc)
        out.append({"field": field or "(body)", "pointer": pointer, "detail": err["msg"]})
    return out


_LEADING_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): ")


def _errors_from_detail(detail: str) -> list[dict[str, str]]:
    """A domain error whose message starts with a field path (``events[3].ts: …``)."""
    m = _LEADING_FIELD.match(detail)
    if not m:
        return []
    field = m.group(1)
    loc: list[str | int] = []
    for part in field.split("."):
        name, _, index = part.partition("[")
        loc.append(name)
        if index:
            loc.append(int(index.rstrip("]")))
    return [{"field": field, "pointer": _path(loc)[1], "detail": detail[m.end() :]}]


def problem_body(code: str, detail: str, errors: list[dict[str, str]] | None = None) -> bytes:
    status, title = PROBLEMS[code]
    body = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors if errors is not None else _errors_from_detail(detail),
    }
    return json.dumps(body).encode()


def problem_response(
    code: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
) -> Response:
    """A problem as a Starlette response."""
    return Response(
        problem_body(code, detail, errors), status_code=problem_status(code), media_type=MEDIA_TYPE
    )


def problem_status(code: str) -> int:
    return PROBLEMS[code][0]
