"""The API's front door: an ASGI middleware every request passes before BentoML sees it.

In order, for a POST to an API route (:data:`service.auth.ENDPOINT_SCOPES`):

1. **key** — ``Authorization: Bearer <key>`` must name an active key (401) whose scopes
   allow the route (403);
2. **rate** — the key's token bucket for that scope must have a token (429 with
   ``Retry-After``; every answer carries ``RateLimit-*`` fields);
3. **media type** — ``Content-Type: application/json`` only (415); this also keeps browsers'
   cross-site form posts out (CSRF);
4. **body** — at most ``api.max_body_bytes`` (413), fully arrived within
   ``api.body_timeout_seconds`` (408);
5. **JSON** — one JSON object, no duplicate keys, no ``NaN``/``Infinity`` (400);
6. **fields** — validated by the endpoint's own (strict) request model (422 with
   ``errors[]``), so BentoML's validation that follows cannot fail.

Every refusal is an RFC 9457 problem (:mod:`service.web.problems`), logged as one line at
INFO; nothing reaches the service, so nothing is stored. A 5xx from the service is turned
into a problem too (its traceback is in BentoML's log). ``GET /docs.json`` is answered
with the completed OpenAPI description (:mod:`service.web.openapi`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from core.store import open_store
from service.auth import ENDPOINT_SCOPES, KeyCache, RateLimiter, Scope, allows, bearer_token
from service.config import Settings, load_settings
from service.metrics import refresh_on_scrape
from service.web.problems import MEDIA_TYPE, field_errors, problem_body, problem_status

__all__ = ["Gate", "caller_key_id", "caller_scopes"]

log = logging.getLogger(__name__)

Receive = Callable[[], Any]
Send = Callable[[dict], Any]

# The id of the key that made the request being served (set by the gate once it verified
# the key; the endpoint runs in the same context, or a copy of it in a worker thread).
_CALLER: ContextVar[str | None] = ContextVar("revival_caller_key_id", default=None)
_SCOPES: ContextVar[tuple[str, ...]] = ContextVar("revival_caller_scopes", default=())


def caller_key_id() -> str | None:
    """The id of the API key making the current request (None outside a guarded request)."""
    return _CALLER.get()


def caller_scopes() -> tuple[str, ...]:
    """The scopes of the API key making the current request (an endpoint whose body asks
    for more than its route's scope checks them; empty outside a guarded request)."""
    return _SCOPES.get()


class _Refusal(Exception):
    def __init__(self, code: str, detail: str, errors: list | None = None, headers=()):
        super().__init__(detail)
        self.code, self.detail, self.errors, self.headers = code, detail, errors, list(headers)


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as one JSON object; :class:`_Refusal` (400) for anything else."""
    if not body.strip():
        raise _Refusal("malformed_request", "a JSON object body is required ({} for defaults)")
    try:
        obj = json.loads(body, object_pairs_hook=_object, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _Refusal("malformed_request", f"invalid JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _Refusal("malformed_request", f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Refusal(
            "malformed_request", f"the body must be a JSON object, not {type(obj).__name__}"
        )
    return obj


class _Guarded:
    """What the gate needs at run time, built on the first request (after settings exist)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = KeyCache(open_store(settings.store_url).keys, settings.api.key_cache_seconds)
        self.limiter = RateLimiter(settings.api.rate_limits)


class Gate:
    """ASGI middleware (``RevivalService.add_asgi_middleware(Gate, models=..., spec=...)``).

    ``models``: route -> the request model BentoML validates with; every route must have a
    scope in :data:`ENDPOINT_SCOPES` (checked here: a new endpoint without one refuses to
    start rather than being open). ``spec``: builds the OpenAPI document.
    """

    def __init__(
        self,
        app: Any,
        models: Mapping[str, type[BaseModel]],
        spec: Callable[[], dict] | None = None,
        settings: Settings | None = None,
    ):
        if unscoped := sorted(set(models) - set(ENDPOINT_SCOPES)):
            raise RuntimeError(f"API routes without a scope in ENDPOINT_SCOPES: {unscoped}")
        self.app = app
        self.models = dict(models)
        self._spec = spec
        self._spec_body: bytes | None = None
        self._settings = settings
        self._state: _Guarded | None = None

    @property
    def state(self) -> _Guarded:
        if self._state is None:
            self._state = _Guarded(self._settings or load_settings())
        return self._state

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/metrics":
            refresh_on_scrape()  # time-dependent gauges (snapshot age) as of this scrape
        needed = ENDPOINT_SCOPES.get(path)
        if needed is not None and method == "POST":
            await self._guarded(scope, receive, send, needed)
        elif path == "/docs.json" and method == "GET" and self._spec is not None:
            await self._send_spec(send)
        elif path == "/metrics" and self.state.settings.api.protect_metrics:
            await self._guarded(scope, receive, send, "metrics")
        else:
            await self.app(scope, receive, send)

    async def _guarded(self, scope: dict, receive: Receive, send: Send, needed: Scope) -> None:
        headers = dict(scope.get("headers") or [])
        extra: list[tuple[bytes, bytes]] = []
        try:
            key_id = await self._authorise(headers, needed)
            _CALLER.set(key_id)
            allowance = self.state.limiter.take(key_id, needed)
            extra = allowance.headers()
            if not allowance.allowed:
                raise _Refusal(
                    "rate_limited",
                    f"more than {allowance.limit} requests at once for scope {needed!r}; "
                    f"retry in {allowance.retry_after} s (api.rate_limits.{needed})",
                )
            if needed != "metrics":
                body = await self._body(headers, receive)
                self._validate(scope["path"], body)
                receive = _replay(body, receive)
        except _Refusal as refusal:
            log.info(
                "%s %s -> %d %s: %s",
                scope["method"],
                scope["path"],
                problem_status(refusal.code),
                refusal.code,
                refusal.detail[:300],
            )
            await _send_problem(send, refusal, [*refusal.headers, *extra])
            return
        await self.app(scope, receive, _finishing(send, extra))

    async def _authorise(self, headers: dict[bytes, bytes], needed: Scope) -> str:
        token = bearer_token(headers.get(b"authorization"))
        challenge = [(b"www-authenticate", b'Bearer realm="revival"')]
        if token is None:
            raise _Refusal("unauthorized", "send 'Authorization: Bearer <API key>'", [], challenge)
        cache = self.state.keys
        key = cache.cached(token) or await anyio.to_thread.run_sync(cache.verify, token)
        if key is None:
            raise _Refusal("unauthorized", "unknown or revoked API key", [], challenge)
        if not allows(key.scopes, needed):
            raise _Refusal(
                "forbidden",
                f"key {key.key_id} ({key.name}) has scopes {list(key.scopes)}; "
                f"this endpoint needs {needed!r}",
                [],
            )
        _SCOPES.set(tuple(key.scopes))
        return key.key_id

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            got = ctype.decode("latin-1") or "none"
            raise _Refusal(
                "unsupported_media_type", f"Content-Type is {got}; send application/json"
            )
        api = self.state.settings.api
        limit = api.max_body_bytes
        too_big = _Refusal(
            "payload_too_large", f"request body exceeds {limit:,} bytes (api.max_body_bytes)"
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(api.body_timeout_seconds) as waited:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _Refusal("malformed_request", "the client went away mid-body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if waited.cancelled_caught:
            raise _Refusal(
                "request_timeout",
                f"the body did not arrive within {api.body_timeout_seconds:g} s "
                "(api.body_timeout_seconds)",
            )
        return b"".join(chunks)

    def _validate(self, path: str, body: bytes) -> None:
        parse_json_object(body)
        try:
            self.models[path].model_validate_json(body)
        except ValidationError as exc:
            errors = field_errors(exc)
            summary = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
            raise _Refusal("invalid_request", summary, errors) from None

    async def _send_spec(self, send: Send) -> None:
        if self._spec_body is None:
            assert self._spec is not None
            self._spec_body = json.dumps(self._spec()).encode()
        await _send(send, 200, self._spec_body, [(b"content-type", b"application/json")])


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app once, then the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _finishing(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` headers and turns a 5xx that is not yet a problem into one."""
    held = False

    async def wrapped(message: dict) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or [])
            ctype = dict(headers).get(b"content-type", b"")
            if message["status"] >= 500 and not ctype.startswith(MEDIA_TYPE.encode()):
                held = True
                return
            message = {**message, "headers": headers + extra}
        elif held:
            if not message.get("more_body", False):
                refusal = _Refusal("internal_error", "an unexpected error; see the server log")
                await _send_problem(send, refusal, extra)
            return
        await send(message)

    return wrapped


async def _send(send: Send, status: int, body: bytes, headers: list) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_problem(send: Send, refusal: _Refusal, extra: list) -> None:
    body = problem_body(refusal.code, refusal.detail, refusal.errors)
    headers = [(b"content-type", MEDIA_TYPE.encode()), *extra]
    if refusal.code in ("payload_too_large", "request_timeout"):
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await _send(send, problem_status(refusal.code), body, headers)
