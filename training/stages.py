"""Stage log of a run: wall time and peak resident memory of each step, printed as it goes.

:func:`measure` times a block and samples the process's RSS every 5 ms to find its peak (it
includes what earlier steps keep alive, i.e. what a real run needs). The training pipeline
logs its stages with :class:`StageLog`; the benchmarks (``python -m benchmarks.<name>``)
print their :class:`Measurement` rows with :func:`print_table`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

from core.memory import release_free_memory

__all__ = ["Measurement", "StageLog", "measure", "print_table"]


@dataclass
class Measurement:
    """One step: wall seconds and peak resident memory (MiB)."""

    name: str
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    note: str = ""
    #: what the process still holds after the step, its freed memory handed back
    #: (:func:`core.memory.release_free_memory`); 0 when not measured
    held_rss_mib: float = 0.0


@contextmanager
def measure(name: str, note: str = "") -> Iterator[Measurement]:
    """Time the block and sample this process's RSS every 5 ms to find its peak."""
    proc = psutil.Process()
    m = Measurement(name, note=note)
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - t0
        stop.set()
        th.join()
        m.peak_rss_mib = max(peak[0], proc.memory_info().rss) / 2**20


def print_table(title: str, rows: list[Measurement]) -> None:
    """Print measurements as an aligned text table."""
    print(f"\n{title}")
    print(f"{'step':<44} {'wall s':>8} {'peak RSS MiB':>13}  note")
    for r in rows:
        print(f"{r.name:<44} {r.seconds:>8.2f} {r.peak_rss_mib:>13.0f}  {r.note}")


class StageLog:
    """Runs the steps of a run, printing each with its wall time, peak RSS and the RSS it
    leaves held, and keeps the measurements (``done``).

    After each step the memory it freed is handed back to the OS, so the next step's peak
    starts from what the run really keeps (a step's transient would otherwise stay mapped
    in the allocators and add to every later peak)."""

    def __init__(self) -> None:
        self.done: list[Measurement] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, measured and logged as step ``name``."""
        print(f"[{len(self.done) + 1}] {name} ...", flush=True)
        with measure(name) as m:
            out = fn()
        release_free_memory()
        m.held_rss_mib = psutil.Process().memory_info().rss / 2**20
        self.done.append(m)
        print(
            f"    done in {m.seconds:.1f} s (peak RSS {m.peak_rss_mib:.0f} MiB,"
            f" {m.held_rss_mib:.0f} MiB held after)",
            flush=True,
        )
        return out
