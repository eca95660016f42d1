"""The serving benchmark's no-op service: the floors it measures ``/decide`` against."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_noop_endpoints_answer_ok_with_the_real_services_settings():
    from benchmarks.noop_service import NoopService
    from service.service import SERVING, RevivalService

    for key, value in SERVING.items():
        assert NoopService.config[key] == RevivalService.config[key] == value
    with TestClient(NoopService.to_asgi()) as client:
        for noop in ("/noop", "/noop_raw", "/noop_sync"):
            r = client.post(noop)
            assert r.json() == {"ok": True} and r.headers["content-type"] == "application/json"
