"""Dump ``decide_batch`` for every customer at one date, to compare two versions of the code.

    python -m tools.dump_decisions --now 2011-09-01 --out /tmp/decisions.jsonl

Runs the service's runtime in-process against the champions in the local MLflow store, a
throw-away contact store and the settings from the environment, pages through the whole
ranking with full decisions (dry: nothing recorded) and writes one JSON line per row, with
the random ``decision_id`` and the timing fields removed, so two dumps compare with ``cmp``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--now", default="2011-09-01T09:00:00+00:00")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--page", type=int, default=1000)
    args = ap.parse_args(argv)

    from core.env import configure_environment

    configure_environment()
    from service.config import load_settings
    from service.runtime import Runtime
    from service.schemas import BatchRequest

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REVIVAL_STORE_URL"] = f"sqlite:///{Path(tmp) / 'store.db'}"
        runtime = Runtime(load_settings())
        try:
            with args.out.open("w") as out:
                offset: int | None = 0
                while offset is not None:
                    req = BatchRequest(now=args.now, offset=offset, limit=args.page)
                    resp = json.loads(runtime.decide_batch(req).model_dump_json())
                    resp.pop("seconds")
                    rows = resp.pop("rows")
                    out.write(json.dumps(resp, sort_keys=True) + "\n")
                    for row in rows:
                        if row.get("decision"):
                            row["decision"].pop("decision_id")
                        out.write(json.dumps(row, sort_keys=True) + "\n")
                    offset = resp["next_offset"]
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
