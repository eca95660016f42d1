"""Channel providers (SMS gateway, e-mail, WeChat, app push) behind one interface.

A :class:`ChannelProvider` sends one :class:`OutboundMessage` and reports a
:class:`SendResult`; it knows nothing about the contact history. :func:`dispatch` adds the
guarantees the business needs on top of any provider: a decision is sent at most once,
every attempt and its outcome are logged in the store (failures are never lost and can be
retried by calling :func:`dispatch` again), and a success appends the ``sent`` event that
feeds frequency caps and engagement.

A send that succeeded at the provider but could not be recorded (crash, database down) is
retried after the attempt's lease expires; providers must therefore honour the
``Idempotency-Key`` header (the decision id) so that the retry is not a second message.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from core.store import (
    AlreadyDispatched,
    ContactStore,
    DispatchAttempt,
    NotDispatchable,
)

__all__ = [
    "ChannelProvider",
    "LogProvider",
    "OutboundMessage",
    "SendResult",
    "WebhookProvider",
    "abandon_open_attempt",
    "dispatch",
]

log = logging.getLogger(__name__)

_ERROR_BODY_MAX = 200


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """One rendered message for one decision; ``to`` is the phone/e-mail/openid/member id."""

    decision_id: str
    customer_id: str
    channel: str
    to: str
    subject: str | None = None
    body: str

    def __post_init__(self) -> None:
        for name in ("decision_id", "customer_id", "channel", "to", "body"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"OutboundMessage.{name} must be a non-empty string")


@dataclass(frozen=True)
class SendResult:
    """Outcome of sending one message.

    ``attempts`` is the number of provider requests made (0 when nothing was sent:
    duplicate or refused); ``duplicate`` is True when the decision had already been sent
    and the stored result is returned instead.
    """

    status: str  # "sent" | "failed"
    status_code: int | None = None
    provider_message_id: str | None = None
    error: str | None = None
    attempts: int = 0
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        """True if the message was (or had already been) sent."""
        return self.status == "sent"


class ChannelProvider(abc.ABC):
    """Something that delivers a message to a customer on one or more channels."""

    @abc.abstractmethod
    def send(self, message: OutboundMessage) -> SendResult:
        """Send ``message``; report failures in the result rather than raising."""

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release resources (HTTP connections)."""


class LogProvider(ChannelProvider):
    """No network: logs the message and reports it sent.

    Used when no provider URL is configured; :func:`dispatch` still records the send in
    the store, so caps and engagement behave as in production. The last ``keep`` messages
    are kept in :attr:`messages` for inspection.
    """

    def __init__(self, keep: int = 1000):
        self.messages: deque[OutboundMessage] = deque(maxlen=keep)

    def send(self, message: OutboundMessage) -> SendResult:
        self.messages.append(message)
        log.info(
            "log provider: decision %s to customer %s on %s",
            message.decision_id,
            message.customer_id,
            message.channel,
        )
        return SendResult(
            status="sent", provider_message_id=f"log-{message.decision_id}", attempts=1
        )


class WebhookProvider(ChannelProvider):
    """POSTs the message as JSON to a gateway URL, with retries.

    The request carries ``Idempotency-Key: <decision_id>`` so that retries (ours, or after
    a crash) never produce a second message at a well-behaved gateway. Connection errors,
    timeouts, 5xx and 429 are retried up to ``max_retries`` times (so at most
    ``max_retries + 1`` requests) with exponential back-off ``backoff_s * 2**n``, or the
    server's ``Retry-After`` seconds, capped at ``max_backoff_s``. Other 4xx are final.
    The gateway's message id is read from a JSON response's ``message_id`` or ``id``.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        client: httpx.Client | None = None,
        max_backoff_s: float = 10.0,
    ):
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"provider URL must be http(s)://host/..., got {url!r}")
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.url = url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> WebhookProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, retry: int, response: httpx.Response | None) -> float:
        delay = self.backoff_s * (2**retry)
        hint = _retry_after(response)
        return max(0.0, min(delay if hint is None else hint, self.max_backoff_s))

    def send(self, message: OutboundMessage) -> SendResult:
        body = {
            "decision_id": message.decision_id,
            "customer_id": message.customer_id,
            "channel": message.channel,
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
        }
        headers = {"Idempotency-Key": message.decision_id}
        error, status_code = "not attempted", None
        for n in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._client.post(
                    self.url, json=body, headers=headers, timeout=self.timeout_s
                )
            except httpx.TimeoutException as exc:
                error, status_code = f"timeout: {type(exc).__name__}: {exc}", None
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error, status_code = f"connection error: {type(exc).__name__}: {exc}", None
            except httpx.HTTPError as exc:  # invalid URL, unsupported protocol...: final
                return SendResult("failed", None, None, f"{type(exc).__name__}: {exc}", n + 1)
            else:
                status_code = response.status_code
                if response.is_success:
                    return SendResult("sent", status_code, _message_id(response), None, n + 1)
                detail = response.text[:_ERROR_BODY_MAX].strip()
                error = f"HTTP {status_code}: {detail}" if detail else f"HTTP {status_code}"
                if status_code != 429 and status_code < 500:
                    return SendResult("failed", status_code, None, error, n + 1)
            if n < self.max_retries:
                time.sleep(self._delay(n, response))
        return SendResult(
            "failed",
            status_code,
            None,
            f"{error} (after {self.max_retries + 1} attempts)",
            self.max_retries + 1,
        )


def _retry_after(response: httpx.Response | None) -> float | None:
    """``Retry-After`` in seconds, if the response carries a numeric one (dates are ignored)."""
    if response is None:
        return None
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _message_id(response: httpx.Response) -> str | None:
    try:
        data: Any = response.json()
    except ValueError:
        return None
    if isinstance(data, dict):
        value = data.get("message_id", data.get("id"))
        return None if value is None else str(value)[:255]
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stored(attempt: DispatchAttempt) -> SendResult:
    return SendResult(
        status="sent",
        status_code=attempt.provider_status_code,
        provider_message_id=attempt.provider_message_id,
        error=None,
        attempts=0,
        duplicate=True,
    )


def abandon_open_attempt(store: ContactStore, decision_id: str, reason: str) -> bool:
    """Close the decision's open attempt (``sending`` without an outcome) as ``failed``.

    For the worker that opened it and died mid-send (a journey agent restarted under the
    same name): the attempt can never finish, and waiting out its lease would retry later
    than an uninterrupted run. The retry is safe because every provider request carries
    ``Idempotency-Key: <decision_id>``. Returns whether an attempt was closed."""
    attempts = store.dispatch_attempts(decision_id)
    last = max((a.attempt for a in attempts), default=0)
    rows = [a for a in attempts if a.attempt == last]
    if not rows or any(a.status != "sending" for a in rows):
        return False
    store.finish_dispatch(
        DispatchAttempt(
            decision_id=decision_id,
            attempt=last,
            status="failed",
            ts=rows[0].ts,
            error=reason[:255],
        )
    )
    return True


def dispatch(
    store: ContactStore,
    provider: ChannelProvider,
    message: OutboundMessage,
    *,
    lease_s: float = 300.0,
    clock: Callable[[], datetime] = _utcnow,
) -> SendResult:
    """Send the message of a recorded decision at most once, logging every attempt.

    - already sent: the stored result is returned (``duplicate=True``, ``attempts=0``)
      and the provider is not called;
    - refused (holdout, no contact, customer/channel mismatch, consent revoked since the
      decision): nothing is sent, the refusal is logged as a failed attempt and returned
      as ``failed`` with the reason;
    - otherwise an attempt is logged as ``sending``, the provider is called and the
      outcome logged as ``sent`` (plus a ``sent`` event) or ``failed`` with its reason.
      A failed decision can be dispatched again later.

    Raises :class:`core.store.UnknownDecision` for a decision that was never recorded
    and :class:`core.store.DispatchInProgress` while another worker's attempt is open
    (younger than ``lease_s`` seconds; make it longer than the provider's worst case).
    """
    done = store.dispatch_success(message.decision_id)
    if done is not None:
        return _stored(done)
    try:
        attempt = store.begin_dispatch(
            message.decision_id, message.customer_id, message.channel, clock(), lease_s
        )
    except AlreadyDispatched:  # another worker finished in between
        done = store.dispatch_success(message.decision_id)
        if done is None:  # pragma: no cover - the success row is never deleted
            raise
        return _stored(done)
    except NotDispatchable as exc:
        return SendResult("failed", error=exc.reason)
    try:
        result = provider.send(message)
    except Exception as exc:
        store.finish_dispatch(
            DispatchAttempt(
                decision_id=message.decision_id,
                attempt=attempt,
                status="failed",
                ts=clock(),
                error=f"provider raised {type(exc).__name__}: {exc}",
            )
        )
        raise
    status = "sent" if result.status == "sent" else "failed"
    first = store.finish_dispatch(
        DispatchAttempt(
            decision_id=message.decision_id,
            attempt=attempt,
            status=status,
            ts=clock(),
            provider_status_code=result.status_code,
            error=(result.error or "provider reported failure") if status == "failed" else None,
            provider_message_id=result.provider_message_id,
            tries=result.attempts,
        )
    )
    if status == "sent" and not first:  # a concurrent attempt won; report the stored one
        done = store.dispatch_success(message.decision_id)
        if done is not None:
            return replace(_stored(done), attempts=result.attempts)
    return result
