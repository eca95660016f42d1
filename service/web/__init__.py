"""The HTTP edge of the service: the request gate, error problems and the OpenAPI document.

* :mod:`service.web.gate` — the ASGI middleware every request passes (key, scope, rate,
  media type, body, strict validation);
* :mod:`service.web.problems` — RFC 9457 problem responses, the one error shape;
* :mod:`service.web.openapi` — BentoML's OpenAPI description, completed.
"""

from __future__ import annotations

from service.web.gate import Gate, caller_key_id, caller_scopes, parse_json_object
from service.web.openapi import complete_spec, package_version
from service.web.problems import MEDIA_TYPE, PROBLEMS, Problem, field_errors, problem_response

__all__ = [
    "MEDIA_TYPE",
    "PROBLEMS",
    "Gate",
    "Problem",
    "caller_key_id",
    "caller_scopes",
    "complete_spec",
    "field_errors",
    "package_version",
    "parse_json_object",
    "problem_response",
]
