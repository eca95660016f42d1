"""The start-up check (service.preflight): one line naming the setting, before any worker."""

from __future__ import annotations

import pytest

from service.preflight import DeploymentError, check_deployment, in_built_bento

URLS = {"REVIVAL_MLFLOW_TRACKING_URI": "http://mlflow:5000", "REVIVAL_STORE_URL": "sqlite:///x"}


@pytest.fixture
def bento_src(tmp_path):
    """A folder laid out as a built bento's sources: ``<bento>/src`` beside ``bento.yaml``."""
    (tmp_path / "bento.yaml").write_text("service: service.service:RevivalService\n")
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def _fails(match: str, **kwargs) -> str:
    with pytest.raises(DeploymentError, match=match) as info:
        check_deployment(**kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("revival: ")
    return message


def test_source_tree_defaults_pass(tmp_path):
    assert not in_built_bento()
    assert check_deployment(environ={}).store_url.startswith("sqlite:///")


def test_built_bento_needs_both_urls(bento_src):
    assert in_built_bento(bento_src)
    _fails("setting REVIVAL_MLFLOW_TRACKING_URI is required", environ={}, root=bento_src)
    only_tracking = {"REVIVAL_MLFLOW_TRACKING_URI": "http://mlflow:5000", "REVIVAL_STORE_URL": " "}
    _fails("setting REVIVAL_STORE_URL is required", environ=only_tracking, root=bento_src)


def test_built_bento_with_urls_passes(bento_src, monkeypatch):
    for key, value in URLS.items():
        monkeypatch.setenv(key, value)
    assert (
        check_deployment(environ=URLS, root=bento_src).mlflow_tracking_uri
        == URLS["REVIVAL_MLFLOW_TRACKING_URI"]
    )


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("REVIVAL_DEFAULT_TIMEZONE", "Mars/Base", "default_timezone: unknown IANA time zone"),
        ("REVIVAL_CONFIG", "/no/such/policy.yaml", "/no/such/policy.yaml"),
        ("REVIVAL_STORE_URL", "not a url", "REVIVAL_STORE_URL"),
        ("REVIVAL_STORE_URL", "mysql://u:p@db/revival", "REVIVAL_STORE_URL .*'mysql'"),
        ("REVIVAL_MLFLOW_TRACKING_URI", "mlflow:5000", "REVIVAL_MLFLOW_TRACKING_URI"),
        ("REVIVAL_CHANNELS__SMS__COST", "-1", "channels.sms.cost"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_it(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    _fails(named, environ={})
