"""core.memory: freed memory goes back to the OS (in a fresh interpreter, measured by RSS);
the stage log reports each stage's peak and what the run holds after it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import psutil

from core.env import PROJECT_ROOT
from core.memory import release_free_memory
from training.stages import StageLog

# a loader's transient in small: Arrow-backed strings and small Python objects, built and
# dropped while something derived from them is kept
SCRIPT = """
import gc, psutil, pandas as pd
from core.memory import release_free_memory
p = psutil.Process()
frame = pd.DataFrame({"s": pd.Series([f"id-{i}" for i in range(3_000_000)], dtype="str")})
words = [str(i) * 3 for i in range(2_000_000)]
kept = frame["s"].astype("category")
del frame, words
gc.collect()
before = p.memory_info().rss
release_free_memory()
print(before - p.memory_info().rss, len(kept))
"""


def test_freed_memory_is_handed_back_after_a_large_transient():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    released, kept = (int(x) for x in out.stdout.split())
    assert kept == 3_000_000
    assert released > 100 * 2**20  # about 330 MiB here; without the release, none


def test_the_stage_log_records_each_stages_peak_and_what_it_leaves_held(capsys):
    release_free_memory()  # what earlier tests freed would otherwise be trimmed mid-test
    start = psutil.Process().memory_info().rss / 2**20
    log = StageLog()
    kept = log.run("keep 200 MiB", lambda: np.ones(200 * 2**17))
    log.run("a transient of 300 MiB", lambda: float(np.ones(300 * 2**17).sum()))
    keep, transient = log.done
    assert keep.held_rss_mib - start > 190  # what the run keeps is held after its stage
    assert transient.peak_rss_mib - transient.held_rss_mib > 250  # the transient is not
    assert transient.held_rss_mib - start > 190 and len(kept) == 200 * 2**17
    assert "MiB held after" in capsys.readouterr().out
