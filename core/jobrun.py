"""``python -m core.jobrun``: supervise one background job and keep its row in the store.

Started detached by the replica that accepted the job (``--detach``: it forks, and the
supervisor runs in a new session as a child of init, not of the replica — servers such as
BentoML's arbiter end their workers' whole process trees on shutdown), so a restart of that
replica neither kills the job nor loses it: the supervisor runs the command, copies its
output to the log file, writes a heartbeat and the log's tail to the job's row every
:data:`core.store.jobs.HEARTBEAT`, and on exit its status, return code and the JSON summary
the command wrote (``--summary``). SIGTERM stops the command and records the job as failed.
The store URL comes from the environment (``REVIVAL_JOB_STORE_URL``), not the command line,
so a database password never shows in a process listing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from core.store import StoreError, open_store
from core.store.jobs import HEARTBEAT

__all__ = ["STORE_ENV", "main"]

STORE_ENV = "REVIVAL_JOB_STORE_URL"
TAIL_LINES = 200  # lines of the log kept in the store


def _copy(out: IO[bytes], log: Path, tail: collections.deque[str]) -> None:
    """The child's output, line by line, to the log file and the tail kept for the store."""
    with log.open("ab") as f:
        for line in iter(out.readline, b""):
            f.write(line)
            f.flush()
            tail.append(line.decode("utf-8", "replace").rstrip("\n"))


def _summary(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable summary {path}: {exc}"}


def _daemonize() -> None:
    """Fork twice around ``setsid``: the caller's process returns at once and the one that
    goes on belongs to no process tree or session of the caller's."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Run ``command`` as job ``--job-id``; returns the command's exit code."""
    p = argparse.ArgumentParser(prog="python -m core.jobrun", description=__doc__)
    p.add_argument("--job-id", required=True)
    p.add_argument("--log", type=Path, required=True, help="file the command's output goes to")
    p.add_argument("--summary", type=Path, help="JSON the command writes when it succeeds")
    p.add_argument(
        "--detach", action="store_true", help="return at once; supervise from a daemon process"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    url = os.environ.get(STORE_ENV)
    if not command or not url:
        p.error(f"a command after -- and {STORE_ENV} are required")
    if args.detach:
        _daemonize()
    store = open_store(url)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    copier = threading.Thread(target=_copy, args=(child.stdout, args.log, tail), daemon=True)
    copier.start()
    try:
        while True:
            try:
                code = child.wait(timeout=HEARTBEAT.total_seconds())
                break
            except subprocess.TimeoutExpired:
                try:
                    store.jobs.beat(args.job_id, child.pid, list(tail))
                except StoreError as exc:  # a store hiccup must not stop the job
                    print(f"jobrun: heartbeat not stored: {exc}", file=sys.stderr)
        copier.join(timeout=10)
        store.jobs.finish(
            args.job_id, code, list(tail), _summary(args.summary) if code == 0 else None
        )
    finally:
        store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
