"""The OpenAPI description served at ``/docs.json``: BentoML's, completed.

BentoML generates paths and request/response schemas from the endpoints. Added here: the
package version and a real description, the bearer-key security scheme with each
endpoint's scope, and every error status an endpoint can answer with its RFC 9457 problem
schema (:mod:`service.web.problems`) and the ``RateLimit-*`` / ``Retry-After`` headers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.auth import ENDPOINT_SCOPES
from service.web.problems import MEDIA_TYPE, PROBLEMS, FieldError, Problem

__all__ = ["ENDPOINT_ERRORS", "complete_spec", "package_version"]

DESCRIPTION = """\
Customer-revival decisions: per customer, is this customer asleep, are they worth waking,
what to offer, on which channel and when — from LightGBM churn and next-purchase models and
ALS cross-sell trained on the brand's own transactions, under an explicit contact policy
(consent, frequency caps, quiet hours, hold-out groups).

**Authentication.** Every endpoint but `/livez`, `/readyz`, `/metrics` and this document
needs `Authorization: Bearer <API key>`. A key has scopes: `decide` (`/decide`,
`/decide_batch`, `/recommend`), `read` (`/customer`, `/report`), `events` (`/events`,
`/points` burns; an adjust needs `admin` too),
`admin` (`/reload`, `/retrain`, `/retrain_status`, `/keys/*`, and every other scope).
Create keys with `python -m service.auth create NAME --scopes decide,events`.

**Requests** are `application/json` only, strictly typed (no coercion of strings to numbers
or booleans), without duplicate keys. **Errors** are RFC 9457 `application/problem+json`
with `errors[]` naming each bad field. **Rate limits** are token buckets per key and scope:
every answer carries `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`; a 429 adds
`Retry-After`.
"""

# Statuses every guarded endpoint can answer (the gate's refusals and a server error).
_COMMON = (400, 401, 403, 408, 413, 415, 422, 429, 500)
# ... and those of the endpoint itself (service.service._guard's mapping).
ENDPOINT_ERRORS: dict[str, tuple[int, ...]] = {
    "/decide": (404, 409, 503),
    "/decide_batch": (503,),
    "/recommend": (404, 503),
    "/customer": (404, 503),
    "/report": (503,),
    "/journeys": (503,),
    "/journeys/customer": (404, 503),
    "/journeys/dry_run": (503,),
    "/journeys/pause": (503,),
    "/events": (404, 409, 503),
    "/points": (404, 409, 503),
    "/customers": (503,),
    "/customers/unmerge": (404, 503),
    "/customers/erase": (404, 503),
    "/reload": (503,),
    "/retrain": (409, 503),
    "/retrain_status": (404,),
    "/keys/create": (503,),
    "/keys/list": (503,),
    "/keys/revoke": (404, 409, 503),
}

_RATE_HEADERS = {
    "RateLimit-Limit": "requests the key's bucket holds for this scope",
    "RateLimit-Remaining": "requests left in the bucket now",
    "RateLimit-Reset": "seconds until the bucket is full again",
}


def package_version() -> str:
    try:
        return metadata.version("revival")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "0+unknown"


def _headers(retry_after: bool = False) -> dict[str, Any]:
    out = {
        name: {"description": text, "schema": {"type": "integer"}}
        for name, text in _RATE_HEADERS.items()
    }
    if retry_after:
        out["Retry-After"] = {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer"},
        }
    return out


def _problem_response(status: int) -> dict[str, Any]:
    titles = sorted({title for s, title in PROBLEMS.values() if s == status})
    return {
        "description": "; ".join(titles),
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "headers": _headers(retry_after=status == 429) if status not in (401,) else {},
    }


Models = Mapping[str, tuple[type[BaseModel], type[BaseModel]]]


def _model_schemas(models: Models) -> tuple[dict[str, tuple[dict, dict]], dict[str, Any]]:
    """route -> (request schema, response schema) and the shared definitions, from pydantic.

    BentoML's generated schemas drop ``null`` from optional fields (``now: null`` is valid,
    a ``KeyOut`` has ``revoked_at: null``) and write ``exclusiveMinimum`` as JSON Schema
    does, which OpenAPI 3.0 reads differently; pydantic's JSON Schema is what the service
    validates and serialises with, and OpenAPI 3.1 takes it as is.
    """
    keys = [(model, "validation") for model, _ in models.values()]
    keys += [(model, "serialization") for _, model in models.values()]
    schemas, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    by_route = {
        route: (schemas[(request, "validation")], schemas[(response, "serialization")])
        for route, (request, response) in models.items()
    }
    return by_route, defs.get("$defs", {})


def complete_spec(spec: dict[str, Any], models: Models | None = None) -> dict[str, Any]:
    """BentoML's spec (``Service.openapi_spec.asdict()``) with security, errors and version;
    with ``models`` (route -> request, response model) the body schemas are pydantic's."""
    out = copy.deepcopy(spec)
    by_route: dict[str, tuple[dict, dict]] = {}
    if models is not None:
        by_route, defs = _model_schemas(models)
        out["openapi"] = "3.1.0"
        out.setdefault("components", {})["schemas"] = defs
    out["info"] = {
        "title": "Revival decision API",
        "version": package_version(),
        "description": DESCRIPTION,
    }
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):
        schemas.pop(name, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    schemas.setdefault("FieldError", FieldError.model_json_schema())
    out["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API key (rvk_…)"}
    }
    for path, scope in ENDPOINT_SCOPES.items():
        operation = out["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        operation["security"] = [{"bearer": []}]
        operation["description"] = (
            f"{operation.get('description') or ''}\n\nNeeds a key with scope `{scope}`.".strip()
        )
        responses = {"200": operation["responses"][200]}
        responses["200"]["headers"] = _headers()
        # the gate refuses a request without a body (send {} for the defaults)
        operation.setdefault("requestBody", {})["required"] = True
        if path in by_route:
            request, response = by_route[path]
            operation["requestBody"]["content"] = {"application/json": {"schema": request}}
            responses["200"]["content"] = {"application/json": {"schema": response}}
        for status in sorted({*_COMMON, *ENDPOINT_ERRORS[path]}):
            responses[str(status)] = _problem_response(status)
        operation["responses"] = responses
    return out
