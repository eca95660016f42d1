"""Channel dispatch against a real HTTP gateway on localhost (no mocked HTTP).

The gateway is an ``http.server`` in a background thread. Its behaviour is chosen by the
first path segment (``/ok/...``, ``/flaky/...``) and it records every request it receives,
so the tests count what actually reached the network.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.store import (
    DecisionRecord,
    DispatchInProgress,
    SqlContactStore,
    UnknownDecision,
)
from service.channels import (
    ChannelProvider,
    LogProvider,
    OutboundMessage,
    SendResult,
    WebhookProvider,
    dispatch,
)

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict


class Gateway:
    """Request log shared between the server thread and the tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []

    def record(self, req: Received) -> int:
        with self.lock:
            self.requests.append(req)
            return sum(1 for r in self.requests if r.path == req.path)

    def hits(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    server: _GatewayServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence
        pass

    def _reply(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = self.server.gateway.record(
            Received(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
        )
        kind = self.path.split("/")[1]
        if kind == "ok":
            self._reply(200, {"message_id": f"gw-{n}"})
        elif kind == "flaky":  # two 503s, then success
            if n <= 2:
                self._reply(503, {"error": "overloaded"})
            else:
                self._reply(200, {"id": f"flaky-{n}"})
        elif kind == "throttle":  # one 429 asking for an immediate retry, then success
            if n == 1:
                self._reply(429, {"error": "slow down"}, {"Retry-After": "0"})
            else:
                self._reply(202, {"message_id": "late"})
        elif kind == "bad":
            self._reply(400, {"error": "invalid phone number"})
        elif kind == "down":
            self._reply(503, {"error": "maintenance"})
        elif kind == "slow":
            time.sleep(0.4)
            self._reply(200, {"message_id": "too-late"})
        else:
            self._reply(404, {"error": "no route"})


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    gateway: Gateway


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[tuple[str, Gateway]]:
    server = _GatewayServer(("127.0.0.1", 0), _Handler)
    server.gateway = Gateway()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.gateway
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(gateway_server: tuple[str, Gateway]) -> Gateway:
    return gateway_server[1]


@pytest.fixture
def route(gateway_server: tuple[str, Gateway]) -> Callable[[str], tuple[str, str]]:
    """A fresh path of the given behaviour, so per-path counters start at zero."""
    base = gateway_server[0]

    def make(kind: str) -> tuple[str, str]:
        path = f"/{kind}/{uuid.uuid4().hex}"
        return base + path, path

    return make


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A localhost port that is bound (so nobody else takes it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/sms"
    sock.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlContactStore]:
    s = SqlContactStore(f"sqlite:///{tmp_path / 'contacts.db'}")
    yield s
    s.close()


def _record(store: SqlContactStore, decision_id: str, holdout: bool = False) -> OutboundMessage:
    store.record_decision(
        DecisionRecord(
            decision_id=decision_id,
            customer_id="c1",
            campaign_id="spring",
            ts=NOW,
            channel="sms",
            send_at=None,
            intent="winback",
            offer_type="coupon_10",
            holdout=holdout,
            revive=True,
            priority=0.9,
        )
    )
    return OutboundMessage(
        decision_id=decision_id,
        customer_id="c1",
        channel="sms",
        to="+8613800000000",
        body="We miss you: 10% off this week",
    )


def _fast(url: str, **kw: float) -> WebhookProvider:
    return WebhookProvider(url, **{"timeout_s": 1.0, "max_retries": 3, "backoff_s": 0.01, **kw})


def _log(store: SqlContactStore, decision_id: str) -> list[tuple[int, str]]:
    return [(a.attempt, a.status) for a in store.dispatch_attempts(decision_id)]


# --------------------------------------------------------------------------- tests


def test_success_records_sent_once(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("ok")
    msg = _record(store, "d1")
    with _fast(url) as provider:
        result = dispatch(store, provider, msg)
    assert result == SendResult("sent", 200, "gw-1", None, attempts=1, duplicate=False)
    [req] = gateway.hits(path)
    assert req.headers["idempotency-key"] == "d1"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "decision_id": "d1",
        "customer_id": "c1",
        "channel": "sms",
        "to": "+8613800000000",
        "subject": None,
        "body": "We miss you: 10% off this week",
    }
    assert _log(store, "d1") == [(1, "sending"), (1, "sent")]
    success = store.dispatch_success("d1")
    assert (success.provider_status_code, success.provider_message_id) == (200, "gw-1")
    sent = store.events_between(NOW - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))
    assert sent[["event", "decision_id", "channel"]].values.tolist() == [["sent", "d1", "sms"]]
    # The send feeds caps and engagement, as one contact, not two.
    assert store.contact_counts("c1", datetime.now(UTC)).day("sms") == 1
    assert store.engagement("c1")["sms"].sends == 1


def test_second_dispatch_does_not_hit_the_gateway(
    store: SqlContactStore, gateway: Gateway, route
) -> None:
    url, path = route("ok")
    msg = _record(store, "d1")
    with _fast(url) as provider:
        first = dispatch(store, provider, msg)
        counts = store.counts()
        second = dispatch(store, provider, msg)
    assert len(gateway.hits(path)) == 1
    assert second.duplicate and second.status == "sent" and second.attempts == 0
    assert second.provider_message_id == first.provider_message_id == "gw-1"
    assert store.counts() == counts


def test_flaky_gateway_retried_until_sent(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("flaky")
    msg = _record(store, "d1")
    with _fast(url, max_retries=3) as provider:
        result = dispatch(store, provider, msg)
    assert (result.status, result.attempts, result.provider_message_id) == ("sent", 3, "flaky-3")
    hits = gateway.hits(path)
    assert len(hits) == 3
    assert {h.headers["idempotency-key"] for h in hits} == {"d1"}
    assert [a.tries for a in store.dispatch_attempts("d1")] == [None, 3]


def test_429_honours_retry_after(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("throttle")
    with _fast(url, backoff_s=5.0) as provider:  # Retry-After: 0 overrides the 5 s back-off
        started = time.monotonic()
        result = dispatch(store, provider, _record(store, "d1"))
    assert time.monotonic() - started < 2.0
    assert (result.status, result.status_code, result.attempts) == ("sent", 202, 2)
    assert len(gateway.hits(path)) == 2


def test_provider_down_is_recorded_and_can_be_retried(
    store: SqlContactStore, gateway: Gateway, route, dead_url: str
) -> None:
    msg = _record(store, "d1")
    with _fast(dead_url, max_retries=2) as provider:
        failed = dispatch(store, provider, msg)
    assert (failed.status, failed.attempts, failed.duplicate) == ("failed", 3, False)
    assert failed.error.startswith("connection error") and "after 3 attempts" in failed.error
    log = store.dispatch_attempts("d1")
    assert [(a.attempt, a.status) for a in log] == [(1, "sending"), (1, "failed")]
    assert log[-1].error == failed.error and log[-1].tries == 3
    assert store.dispatch_success("d1") is None
    assert store.events_between(NOW - timedelta(days=1), NOW + timedelta(days=9999)).empty

    url, path = route("ok")  # the gateway is back: the same decision goes out once
    with _fast(url) as provider:
        assert dispatch(store, provider, msg).status == "sent"
    assert len(gateway.hits(path)) == 1
    assert _log(store, "d1") == [(1, "sending"), (1, "failed"), (2, "sending"), (2, "sent")]


def test_server_errors_exhaust_retries(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("down")
    with _fast(url, max_retries=2) as provider:
        result = dispatch(store, provider, _record(store, "d1"))
    assert (result.status, result.status_code, result.attempts) == ("failed", 503, 3)
    assert "maintenance" in result.error and "after 3 attempts" in result.error
    assert len(gateway.hits(path)) == 3
    assert _log(store, "d1") == [(1, "sending"), (1, "failed")]


def test_client_error_is_not_retried(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("bad")
    with _fast(url, max_retries=3) as provider:
        result = dispatch(store, provider, _record(store, "d1"))
    assert (result.status, result.status_code, result.attempts) == ("failed", 400, 1)
    assert result.error.startswith("HTTP 400") and "invalid phone number" in result.error
    assert len(gateway.hits(path)) == 1
    assert store.dispatch_attempts("d1")[-1].provider_status_code == 400


def test_timeouts_are_retried(store: SqlContactStore, gateway: Gateway, route) -> None:
    url, path = route("slow")
    with _fast(url, timeout_s=0.1, max_retries=1) as provider:
        result = dispatch(store, provider, _record(store, "d1"))
    assert (result.status, result.attempts) == ("failed", 2)
    assert result.error.startswith("timeout")
    deadline = time.monotonic() + 2
    while len(gateway.hits(path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(gateway.hits(path)) == 2


def test_refused_decisions_never_reach_the_gateway(
    store: SqlContactStore, gateway: Gateway, route
) -> None:
    url, path = route("ok")
    holdout = _record(store, "h1", holdout=True)
    revoked = _record(store, "d2")
    store.set_consent("c1", "sms", False, NOW + timedelta(minutes=1), "stop_reply")
    with _fast(url) as provider:
        r1 = dispatch(store, provider, holdout)
        r2 = dispatch(store, provider, revoked)
        with pytest.raises(UnknownDecision):
            dispatch(store, provider, OutboundMessage(**{**vars(revoked), "decision_id": "x"}))
    assert (r1.status, r1.attempts) == ("failed", 0) and "holdout" in r1.error
    assert (r2.status, r2.attempts) == ("failed", 0) and "consent" in r2.error
    assert gateway.hits(path) == []
    assert _log(store, "h1") == [(1, "failed")] and _log(store, "d2") == [(1, "failed")]
    assert store.counts()["dispatch_success"] == 0


def test_open_attempt_blocks_a_concurrent_dispatch(
    store: SqlContactStore, gateway: Gateway, route
) -> None:
    url, path = route("ok")
    msg = _record(store, "d1")
    store.begin_dispatch("d1", "c1", "sms", NOW)  # another worker is sending right now
    with _fast(url) as provider:
        with pytest.raises(DispatchInProgress):
            dispatch(store, provider, msg, lease_s=60, clock=lambda: NOW + timedelta(seconds=5))
        assert gateway.hits(path) == []
        # The other worker died: once its lease has expired the decision is sent.
        result = dispatch(store, provider, msg, lease_s=60, clock=lambda: NOW + timedelta(hours=1))
    assert result.status == "sent" and len(gateway.hits(path)) == 1
    assert _log(store, "d1") == [(1, "sending"), (2, "sending"), (2, "sent")]


class ExplodingProvider(ChannelProvider):
    """A provider with a bug: raises instead of returning a failed result."""

    def send(self, message: OutboundMessage) -> SendResult:
        raise RuntimeError("template variable 'first_name' missing")


def test_provider_exception_is_recorded(store: SqlContactStore) -> None:
    msg = _record(store, "d1")
    with pytest.raises(RuntimeError, match="first_name"):
        dispatch(store, ExplodingProvider(), msg)
    last = store.dispatch_attempts("d1")[-1]
    assert last.status == "failed" and "RuntimeError" in last.error and "first_name" in last.error
    assert dispatch(store, LogProvider(), msg).status == "sent"  # retried later, elsewhere


def test_log_provider_records_to_the_store_only(store: SqlContactStore) -> None:
    provider = LogProvider()
    msg = _record(store, "d1")
    first = dispatch(store, provider, msg)
    second = dispatch(store, provider, msg)
    assert (first.status, first.provider_message_id, first.attempts) == ("sent", "log-d1", 1)
    assert second.duplicate and list(provider.messages) == [msg]
    assert _log(store, "d1") == [(1, "sending"), (1, "sent")]
    assert store.engagement("c1")["sms"].sends == 1


def test_invalid_configuration_and_messages() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookProvider("ftp://gateway.example/sms")
    with pytest.raises(ValueError, match="max_retries"):
        WebhookProvider("http://gateway.example/sms", max_retries=-1)
    with pytest.raises(ValueError, match="body"):
        OutboundMessage(decision_id="d", customer_id="c", channel="sms", to="+86", body=" ")
