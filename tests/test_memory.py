"""core.memory: freed memory goes back to the OS (in a fresh interpreter, measured by RSS)."""

from __future__ import annotations

import subprocess
import sys

from core.env import PROJECT_ROOT

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
