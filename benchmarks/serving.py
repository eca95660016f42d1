"""``python -m benchmarks.serving``: serving latency and throughput of the decision service.

Starts two ``bentoml serve`` processes on free ports: the real service (real transaction log,
the current champions, a throw-away contact store) and the no-op service
(:mod:`benchmarks.noop_service`, same workers, threads and traffic settings), then measures
in the same run:

* sequential latency p50/p99 over HTTP (the real service with its API key checked and its
  rate limit counted on every request, as deployed) of the no-op service's ``/noop`` (the framework's
  floor, on the event loop like ``/decide``) and ``/noop_sync`` (the floor in a worker
  thread), and of the real service's ``/decide`` with
  ``dry_run`` (no write) and ``/decide`` recording the decision (the real call: store reads,
  engine, atomic cap reservation), each over many different customers;
* the same sequentially from a minimal keep-alive HTTP/1.1 client (pre-encoded requests:
  almost no client time, so the server's own cost shows), first one endpoint after the
  other, then in alternating blocks of 100 requests between the two servers (the target's
  measure: the blocks share the machine's drift, which back-to-back runs of several seconds
  do not), with
  ``/noop_raw`` among them: a no-op that answers a pre-encoded body as ``/decide`` does,
  without the JSON-schema work BentoML does for ``/noop``'s ``dict`` output (its ratios are
  printed too, as the stricter floor; the target is stated against ``/noop``);
* requests/s with 16 concurrent connections from that minimal client (httpx itself would
  take most of the 2 cores) for ``/noop`` and ``/decide``;
* where one ``decide`` spends its time, in-process: the whole call (dry run, recorded), the
  store's history read and the engine alone;
* ``decide_batch`` customers/s in-process: rank every customer of the snapshot and build full
  decisions for a 100-row page; the ranking alone; and the ranking on a 200,000-customer
  snapshot (the real one tiled) to show it scales.

Targets (issue #4, 2 cores): decide p50 <= 1.5 x noop p50; decide_batch >= 20,000 customers/s.
Not a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx

from core.env import DEFAULT_DATA, configure_environment, default_tracking_uri
from tools.serve import Server

NOOP_SERVICE = "benchmarks.noop_service:NoopService"

__all__ = ["main"]


@dataclass
class Row:
    name: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    rate: float | None = None
    unit: str = ""
    note: str = ""


def _sequential(client: httpx.Client, path: str, bodies: list, n: int) -> Row:
    for body in bodies[: min(50, len(bodies))]:
        client.post(path, json=body)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        r = client.post(path, json=bodies[i % len(bodies)])
        times.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
    times.sort()
    return Row(
        f"{path} sequential",
        p50_ms=1000 * statistics.median(times),
        p99_ms=1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
        rate=len(times) / sum(times),
        unit="req/s",
        note=f"{n} requests",
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


# The Authorization header line each server wants (the real one's key; the no-op: none).
_BEARER: dict[str, str] = {}


def _raw_requests(url: str, path: str, bodies: list) -> list[bytes]:
    host = url.removeprefix("http://")
    out = []
    auth = _BEARER.get(url, "")
    for body in bodies:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


async def _raw_load(
    url: str, path: str, bodies: list, clients: int, seconds: float, sequential_n: int = 0
) -> Row:
    """Load from a minimal keep-alive HTTP/1.1 client (pre-encoded requests), so that on 2
    cores the load generator costs little next to the server. ``sequential_n`` > 0: one
    connection, that many requests one after the other; else ``clients`` connections for
    ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    requests = _raw_requests(url, path, bodies)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int, count: int | None) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        i = k
        try:
            while (time.perf_counter() < stop) if count is None else (i < count):
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
                i += 1 if count is not None else clients
        finally:
            writer.close()

    if sequential_n:
        await worker(0, 30)  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await worker(0, sequential_n)
        name = f"{path} sequential (raw client)"
    else:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, None) for k in range(clients)))
        name = f"{path} {clients} clients (raw client)"
    took = time.perf_counter() - t0
    latencies.sort()
    return Row(
        name,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * latencies[int(0.99 * (len(latencies) - 1))],
        rate=len(latencies) / took,
        unit="req/s",
        note=f"{len(latencies)} requests in {took:.1f} s, {errors} errors",
    )


async def _raw_alternating(
    endpoints: list[tuple[str, str, str, list]], n: int, block: int = 100
) -> list[Row]:
    """Sequential latency of several endpoints ``(name, server url, path, bodies)``, one
    keep-alive connection per server, in alternating blocks of ``block`` requests (noop,
    decide, …, noop, decide, …) until each has ``n``; one request in flight at a time. A
    2-core VM's speed drifts by tens of percent over seconds; blocks a fraction of a second
    long share the drift, so their ratios hold where back-to-back runs of several seconds
    each do not. Blocks, not single requests, so that each endpoint runs with its own code
    and data warm in the caches, as in a run of its own."""
    connections = {}
    for url in dict.fromkeys(url for _, url, _, _ in endpoints):
        host, port = url.removeprefix("http://").split(":")
        connections[url] = await asyncio.open_connection(host, int(port))
    encoded = [_raw_requests(url, path, bodies) for _, url, path, bodies in endpoints]
    latencies: list[list[float]] = [[] for _ in endpoints]
    errors = [0] * len(endpoints)
    sent = [0] * len(endpoints)
    try:
        for k, requests in enumerate(encoded):  # warm-up
            reader, writer = connections[endpoints[k][1]]
            for i in range(min(30, len(requests))):
                writer.write(requests[i])
                await _read_response(reader)
            sent[k] = 30
        while any(len(lat) < n for lat in latencies):
            for k, requests in enumerate(encoded):
                reader, writer = connections[endpoints[k][1]]
                for _ in range(min(block, n - len(latencies[k]))):
                    t0 = time.perf_counter()
                    writer.write(requests[sent[k] % len(requests)])
                    status = await _read_response(reader)
                    latencies[k].append(time.perf_counter() - t0)
                    errors[k] += status != 200
                    sent[k] += 1
    finally:
        for _, writer in connections.values():
            writer.close()
    rows = []
    for (name, _, _, _), lat, err in zip(endpoints, latencies, errors, strict=True):
        lat.sort()
        rows.append(
            Row(
                f"{name} alternating (raw client)",
                p50_ms=1000 * statistics.median(lat),
                p99_ms=1000 * lat[int(0.99 * (len(lat) - 1))],
                rate=len(lat) / sum(lat),
                unit="req/s",
                note=f"{len(lat)} requests in blocks of {block}, {err} errors",
            )
        )
    return rows


def _in_process(env: dict[str, str]) -> list[Row]:
    import numpy as np

    from service.config import load_settings
    from service.engine import rank_inputs
    from service.runtime import Runtime
    from service.schemas import BatchRequest

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        runtime = Runtime(load_settings())
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rows = [
        Row("service start-up (in-process)", rate=None, note=f"{runtime.startup_seconds:.1f} s")
    ]
    state = runtime.state
    n = len(state.inputs)
    now = state.snapshot.at + timedelta(days=5)
    rows += _decide_parts(runtime, now)
    rows += _events_rows(runtime, now)
    page = BatchRequest(now=now, limit=100)
    runtime.decide_batch(page)  # warm-up
    best = min(_timed(lambda: runtime.decide_batch(page)) for _ in range(3))
    rows.append(
        Row(
            "decide_batch: rank all + 100 full decisions",
            rate=n / best,
            unit="customers/s",
            note=f"{n:,} customers in {best * 1000:.0f} ms",
        )
    )
    ranking = BatchRequest(now=now, limit=100, decisions=False)
    best = min(_timed(lambda: runtime.decide_batch(ranking)) for _ in range(5))
    rows.append(
        Row(
            "decide_batch: rank all, no page decisions",
            rate=n / best,
            unit="customers/s",
            note=f"{n:,} customers in {best * 1000:.1f} ms",
        )
    )
    tiles = int(np.ceil(200_000 / n))
    big = state.inputs.take(np.tile(np.arange(n), tiles)[:200_000])
    best = min(_timed(lambda: rank_inputs(big, runtime.settings)) for _ in range(3))
    rows.append(
        Row(
            "priorities(): 200,000 customers",
            rate=len(big) / best,
            unit="customers/s",
            note=f"{best * 1000:.0f} ms (snapshot tiled)",
        )
    )
    runtime.close()
    return rows


def _decide_parts(runtime, now) -> list[Row]:
    """Where one ``decide`` spends its time, in-process over 1,000 customers: the whole call
    as the endpoint makes it (dry run and recorded, with the response's JSON), the store's
    history read and the engine alone."""
    import functools

    from service.engine import decide_data
    from service.schemas import DecideRequest

    state = runtime.state
    ids = [str(c) for c in state.inputs.index[:1000]]
    history = {c: runtime.history(c, now) for c in ids}

    def engine(c: str) -> None:
        pos = runtime.position(c, state)
        decide_data(
            runtime.view(c, None, state),
            runtime.model_scores(pos, state),
            runtime.candidates(c, runtime.params.candidate_items, state),
            history[c],
            runtime.settings,
            now,
            item_names=state.models.item_names or state.snapshot.item_names,
            model_versions=state.models.versions,
            params=runtime.params,
            prepared=state.prepared.row(pos),  # as a served decision runs it
        )

    later = now + timedelta(days=40)  # recorded decisions on days no earlier pass touched
    parts = (
        (
            "decide dry_run (in-process)",
            lambda c: runtime.decide_encoded(DecideRequest(customer_id=c, now=now, dry_run=True)),
        ),
        (
            "decide recorded (in-process)",
            lambda c: runtime.decide_encoded(DecideRequest(customer_id=c, now=later)),
        ),
        ("  store: history read", functools.partial(runtime.history, now=now)),
        ("  engine: decide_data() on a read history", engine),
    )
    out = []
    for name, fn in parts:
        took = []
        for c in ids:
            t0 = time.perf_counter()
            fn(c)
            took.append(time.perf_counter() - t0)
        took.sort()
        out.append(
            Row(
                name,
                p50_ms=1000 * took[len(took) // 2],
                p99_ms=1000 * took[int(len(took) * 0.99)],
                note=f"{len(ids):,} customers",
            )
        )
    return out


def _events_rows(runtime, now) -> list[Row]:
    """``/events`` in-process: webhook-sized batches (up to 1,000) of ``sent`` and then ``opened``
    events for the decisions ``_decide_parts`` recorded (validated against them, stored)."""
    import pandas as pd

    from service.schemas import EventIn

    d = runtime.store.decisions_between(now, now + timedelta(days=400))
    d = d[d["revive"] & ~d["holdout"] & d["channel"].notna()].head(1000)
    rows = []
    for kind, minutes in (("sent", 1), ("opened", 30)):
        events = [
            EventIn(
                customer_id=c,
                decision_id=i,
                campaign_id=k,
                channel=ch,
                event=kind,
                ts=(ts if pd.isna(at) else at) + timedelta(minutes=minutes),
            )
            for c, i, k, ch, at, ts in zip(
                d["customer_id"],
                d["decision_id"],
                d["campaign_id"],
                d["channel"],
                d["send_at"],
                d["ts"],
                strict=True,
            )
        ]
        took = _timed(lambda ev=events: runtime.record(ev, []))
        rows.append(
            Row(
                f"events: {len(events):,} '{kind}' in one batch",
                rate=len(events) / took,
                unit="events/s",
                note=f"{took * 1000:.0f} ms (checked against their decisions, stored)",
            )
        )
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _print(rows: list[Row], header: str) -> None:
    print(f"\n{header}")
    print(f"{'measurement':<46} {'p50 ms':>8} {'p99 ms':>8} {'rate':>12} {'unit':<12} note")
    for r in rows:
        p50 = f"{r.p50_ms:8.2f}" if r.p50_ms is not None else f"{'':>8}"
        p99 = f"{r.p99_ms:8.2f}" if r.p99_ms is not None else f"{'':>8}"
        rate = f"{r.rate:12,.0f}" if r.rate is not None else f"{'':>12}"
        print(f"{r.name:<46} {p50} {p99} {rate} {r.unit:<12} {r.note}")


@dataclass
class _Workload:
    """Request bodies of the real service: the first 1,000 ranked customers."""

    ready_note: str
    dry: list[dict]  # dry-run decisions, one day
    rec: list[dict]  # recorded decisions over 20 days from snapshot + 5 (httpx pass)
    rec_raw: list[dict]  # the same from snapshot + 25 (the raw client's pass)
    rec_alt: list[dict]  # the same from snapshot + 65 (the alternating pass)


def _workload(c: httpx.Client, ready: float) -> _Workload:
    """The bodies: recording is spread over days so the decisions stay real contacts; each
    pass uses its own 20 days (no caps in common)."""
    snap = c.post("/decide_batch", json={"decisions": False, "limit": 0}).json()
    rows_all = c.post("/decide_batch", json={"decisions": False, "limit": 1000}).json()["rows"]
    ids = [r["customer_id"] for r in rows_all]
    now = c.post("/customer", json={"customer_id": ids[0]}).json()["snapshot_at"]
    day = f"{now[:10]}T10:00:00+01:00"
    start = date.fromisoformat(now[:10])

    def recorded(offset: int) -> list[dict]:
        return [
            {"customer_id": i, "now": f"{start + timedelta(days=offset + k % 20)}T10:00:00+01:00"}
            for k, i in enumerate(ids)
        ]

    return _Workload(
        ready_note=f"{ready:.1f} s, {snap['candidates']:,} customers",
        dry=[{"customer_id": i, "now": day, "dry_run": True} for i in ids],
        rec=recorded(5),
        rec_raw=recorded(25),
        rec_alt=recorded(65),
    )


def _served(server: Server, noop_url: str, ready: float, args: argparse.Namespace) -> list[Row]:
    """Every over-HTTP row: httpx, then the raw client sequential, alternating, concurrent.
    The first rows are the ones :func:`_print_ratios` compares (same order)."""
    n = args.requests
    url = server.url
    _BEARER[url] = f"Authorization: Bearer {server.key}\r\n"
    with (
        httpx.Client(base_url=url, headers=server.auth, timeout=60) as c,
        httpx.Client(base_url=noop_url, timeout=60) as nc,
    ):
        w = _workload(c, ready)
        served = [Row("bentoml serve: ready", note=w.ready_note)]
        served.append(_sequential(nc, "/noop", [None], n))
        served.append(_sequential(nc, "/noop_sync", [None], n))
        dry_row = _sequential(c, "/decide", w.dry, n)
        dry_row.name = "/decide dry_run sequential"
        rec_row = _sequential(c, "/decide", w.rec, n)
        rec_row.name = "/decide recorded sequential"
        served += [dry_row, rec_row]
    served.append(asyncio.run(_raw_load(noop_url, "/noop", [None], 1, 0, sequential_n=n)))
    for label, bodies in (("dry_run", w.dry), ("recorded", w.rec_raw)):
        row = asyncio.run(_raw_load(url, "/decide", bodies, 1, 0, sequential_n=n))
        row.name = f"/decide {label} sequential (raw client)"
        served.append(row)
    served += asyncio.run(
        _raw_alternating(
            [
                ("/noop", noop_url, "/noop", [None]),
                ("/noop_raw", noop_url, "/noop_raw", [None]),
                ("/decide dry_run", url, "/decide", w.dry),
                ("/decide recorded", url, "/decide", w.rec_alt),
            ],
            n,
        )
    )
    for label, server, path, bodies in (
        ("/noop", noop_url, "/noop", [None]),
        ("/decide dry_run", url, "/decide", w.dry),
        ("/decide recorded", url, "/decide", w.rec),
    ):
        row = asyncio.run(_raw_load(server, path, bodies, args.clients, args.seconds))
        row.name = f"{label} {args.clients} clients (raw client)"
        served.append(row)
    return served


def _print_ratios(served: list[Row]) -> None:
    """``/decide`` p50 over the no-op service's p50, for each way of measuring it."""
    _, noop, _, dry_row, rec_row, raw_noop, raw_dry, raw_rec = served[:8]
    alt_noop, alt_raw, alt_dry, alt_rec = served[8:12]
    pairs = (
        (dry_row, noop),
        (rec_row, noop),
        (raw_dry, raw_noop),
        (raw_rec, raw_noop),
        (alt_dry, alt_noop),
        (alt_rec, alt_noop),
    )
    for r, base in pairs:
        ratio = r.p50_ms / base.p50_ms
        print(f"  {r.name}: p50 = {ratio:.2f} x {base.name} p50 (target <= 1.5)")
    for r in (alt_noop, alt_dry, alt_rec):  # the stricter floor, for the record
        ratio = r.p50_ms / alt_raw.p50_ms
        print(f"  {r.name}: p50 = {ratio:.2f} x {alt_raw.name} p50 (no target)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    p.add_argument("--data", default=os.environ.get("REVIVAL_DATA_PATH", str(DEFAULT_DATA)))
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("REVIVAL_MLFLOW_TRACKING_URI", default_tracking_uri()),
    )
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per endpoint")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0, help="per concurrent measurement")
    args = p.parse_args(argv)

    from service.service import SERVING
    from training.pipeline import champions_or_explain

    if not champions_or_explain(args.tracking_uri):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "REVIVAL_DATA_PATH": args.data,
            "REVIVAL_MLFLOW_TRACKING_URI": args.tracking_uri,
            "REVIVAL_STORE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "BENTOML_DO_NOT_TRACK": "true",
            # authentication and rate limiting run on every request, at a rate that never
            # binds (what is measured is their cost, not a throttle)
            "REVIVAL_API__RATE_LIMITS__DECIDE__PER_SECOND": "1000000",
            "REVIVAL_API__RATE_LIMITS__DECIDE__BURST": "1000000",
        }
        noop = Server(env, Path(tmp) / "noop.log", target=NOOP_SERVICE).start()
        try:
            t0 = time.perf_counter()
            server = Server(env, Path(tmp) / "serve.log").start()
            ready = time.perf_counter() - t0
            try:
                served = _served(server, noop.url, ready, args)
            finally:
                server.stop()
        finally:
            noop.stop()
        workers = SERVING["workers"]
        _print(
            served,
            f"served over HTTP ({server.url}; no-op service {noop.url}; {workers} worker each)",
        )
        _print_ratios(served)
        batch = _in_process(env)
        _print(batch, "in-process")
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
