"""Schemathesis fuzzes the served API: every operation of ``/docs.json``, every check.

The real service (``RevivalService.to_asgi()`` on the test champions, its own store),
authenticated with the test admin key, all of Schemathesis' phases (examples, coverage,
fuzzing, stateful) and checks, configured by ``schemathesis.toml`` at the project root
(fixed seed, deterministic generation, a bounded number of examples per operation). Where
an operation may answer a status the schema cannot tie to the generated data (an unknown
customer id, a running retraining job), that file says so per operation — no check is off.

``/retrain`` runs for real: the service's data file is a copy that is removed once the
service has started, so every retraining child exits within a second or two ("--data: no
such file") instead of training for minutes (a valid start while one runs is a 409).
``/reload`` with ``data: true`` loads the snapshot the test training stored (200); without
one it would rebuild it from that (missing) file: 503.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from auth import TEST_KEY

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"


@pytest.fixture(scope="module")
def fuzz_app(service_env, tmp_path_factory):
    """The service's ASGI app, started (lifespan) with a data file that then disappears."""
    import schemathesis.python.asgi as st_asgi

    folder = tmp_path_factory.mktemp("fuzz")
    env = service_env(folder)
    data = folder / "data.csv"
    shutil.copyfile(env["REVIVAL_DATA_PATH"], data)
    metrics = folder / "prometheus"  # what `bentoml serve` sets up for /metrics
    metrics.mkdir()
    env |= {
        "REVIVAL_DATA_PATH": str(data),
        "REVIVAL_FUZZ_KEY": TEST_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        app = RevivalService.to_asgi()
        with st_asgi.get_client(app) as client:  # starts the service (lifespan)
            assert client.get("/readyz").status_code == 200
        data.unlink()
        yield app
        st_asgi.shutdown_lifespans()


def _answer(interaction) -> str:
    """The status and the start of the body the service answered a failing case with."""
    response = getattr(interaction, "response", None)
    if response is None:
        return "(no response)"
    return f"{response.status_code} {response.content[:300]!r}"


def _run(schema) -> tuple[dict[str, int], list[str], list[str], object]:
    """Run every phase; (cases per phase, distinct failures, engine errors, the end event)."""
    from schemathesis.engine import Status, events, from_schema

    cases: dict[str, int] = {}
    failures: dict[str, str] = {}
    errors: list[str] = []
    finished = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phase = event.phase.value
            cases[phase] = cases.get(phase, 0) + len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    info = check.failure_info
                    key = f"[{phase}] {event.recorder.label} {check.name}: {info.failure.title}"
                    failures.setdefault(
                        key,
                        f"{key}\n{info.failure.message}\n{info.code_sample}\n-> "
                        + _answer(event.recorder.interactions.get(case_id)),
                    )
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            finished = event
    return cases, [failures[k] for k in sorted(failures)], errors, finished


def test_schemathesis_finds_nothing(fuzz_app):
    """Zero failures from every check on every operation (the run is reported on stdout)."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import StopReason

    config = SchemathesisConfig.from_path(CONFIG)
    schema = schemathesis.openapi.from_asgi("/docs.json", fuzz_app, config=config)
    t0 = time.perf_counter()
    cases, failures, errors, finished = _run(schema)
    seconds = time.perf_counter() - t0
    print(
        f"\nschemathesis: {sum(cases.values())} cases {cases} in {seconds:.1f} s, "
        f"{len(failures)} distinct failures"
    )
    if dump := os.environ.get("REVIVAL_FUZZ_DUMP"):
        Path(dump).write_text("\n\n".join(failures + errors))
    assert not failures, f"{len(failures)} distinct failures:\n\n" + "\n\n".join(failures[:20])
    assert not errors, "\n\n".join(errors)
    assert finished is not None and finished.stop_reason == StopReason.COMPLETED, finished
    assert sum(cases.values()) > 0
