"""Regression tests for what the Schemathesis run (tests/test_api_fuzz.py) found."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.store import open_store
from service.config import IdentitySettings
from service.runtime import DataUnavailable, Runtime


@pytest.fixture(scope="module")
def spec() -> dict:
    from service.service import RevivalService
    from service.web import complete_spec

    models = {api.route: (api.input_spec, api.output_spec) for api in RevivalService.apis.values()}
    return complete_spec(RevivalService.openapi_spec.asdict(), models)


def _prop(spec: dict, schema: dict, name: str) -> dict:
    ref = schema.get("$ref")
    if ref:
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema["properties"][name]


def test_optional_fields_are_nullable_in_the_spec(spec):
    """BentoML dropped null: `now: null` was 'invalid' yet accepted; revoked_at: null 'broke' the schema."""
    assert spec["openapi"] == "3.1.0"
    decide = spec["paths"]["/decide"]["post"]
    now = _prop(spec, decide["requestBody"]["content"]["application/json"]["schema"], "now")
    assert {"type": "null"} in now["anyOf"]
    created = spec["paths"]["/keys/create"]["post"]["responses"]["200"]
    revoked = _prop(spec, created["content"]["application/json"]["schema"], "revoked_at")
    assert {"type": "null"} in revoked["anyOf"]


def test_every_request_body_is_required(spec):
    """The gate refuses an empty body (400); the spec said the body was optional."""
    for path, ops in spec["paths"].items():
        if "post" in ops:
            assert ops["post"]["requestBody"]["required"] is True, path


def test_blank_ids_are_invalid_in_the_spec_too(spec):
    """'  ' is stripped to '' and refused (422); the spec's pattern now says so."""
    decide = spec["paths"]["/decide"]["post"]
    cid = _prop(spec, decide["requestBody"]["content"]["application/json"]["schema"], "customer_id")
    assert not re.search(cid["pattern"], "   \u3000")
    assert re.search(cid["pattern"], " C1 ")


def test_self_revocation_is_documented_as_409(spec):
    assert "409" in spec["paths"]["/keys/revoke"]["post"]["responses"]


def test_reload_without_its_data_file_is_unavailable(tmp_path: Path):
    """reload(data=True) with an unreadable log was a 500; now DataUnavailable -> 503
    (no stored snapshot in the tracking store, so the log is the fallback)."""
    settings = SimpleNamespace(
        data_path=tmp_path / "gone.csv",
        snapshot="newest",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}",
        default_timezone="Europe/London",
        identity=IdentitySettings(),
        log_mapping=None,
    )
    fake = SimpleNamespace(settings=settings, store=open_store(f"sqlite:///{tmp_path / 'c.db'}"))
    with pytest.raises(DataUnavailable, match="data_path"):
        Runtime._fresh_snapshot(fake)

    from service.service import _guard

    def boom():
        raise DataUnavailable("data_path: cannot rebuild the snapshot")

    response = _guard(boom)
    assert response.status_code == 503
    assert json.loads(response.body)["type"] == "urn:revival:problem:unavailable"
