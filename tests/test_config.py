"""Settings load from YAML, take env overrides, and fail loudly naming the bad key."""

from __future__ import annotations

import os
import re
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from service.config import (
    CHANNELS,
    DEFAULT_CONFIG_PATH,
    OFFER_TYPES,
    PROJECT_ROOT,
    ConfigError,
    QuietHours,
    Settings,
    load_settings,
    resolve_sqlite_url,
)

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without any REVIVAL_* variable from the developer's shell."""
    for key in list(os.environ):
        if key.upper().startswith("REVIVAL_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_policy_loads_with_documented_defaults() -> None:
    settings = load_settings()

    assert settings.currency == "GBP"
    assert settings.store_url == f"sqlite:///{PROJECT_ROOT}/var/revival.db"
    assert settings.data_path == PROJECT_ROOT.parent / "shared/data/online_retail_II.csv.gz"
    assert settings.mlflow_tracking_uri == f"sqlite:///{PROJECT_ROOT}/mlflow/mlflow.db"
    assert settings.model_names.model_dump() == {
        "churn": "churn",
        "next_purchase": "next_purchase",
        "cross_sell": "cross_sell",
        "offer_uplift": "offer_uplift",
    }
    assert settings.model_alias == "champion"
    expected = {  # cost, per day, per week, length, unsubscribe, identifier
        "sms": (0.04, 1, 2, 70, True, "phone"),
        "email": (0.002, 1, 3, 2000, True, "email"),
        "wechat": (0.01, 1, 2, 600, False, "wechat_openid"),
        "app_push": (0.001, 2, 5, 120, False, "member_id"),
    }
    for name, values in expected.items():
        policy = settings.channel(name)
        assert (
            policy.cost,
            policy.per_day_cap,
            policy.per_week_cap,
            policy.length_limit,
            policy.needs_unsubscribe,
            policy.identifier,
        ) == values
        assert policy.enabled and policy.max_segments == 1 and 0 < policy.base_engagement < 1
    assert settings.global_weekly_cap == 4
    assert (settings.quiet_hours.start, settings.quiet_hours.end) == (time(21), time(9))
    assert settings.default_timezone == "Europe/London" and settings.zone == LONDON
    assert settings.default_locale == "zh-CN"
    assert settings.reminder_days_before == 3
    assert settings.holdout_share == 0.1 and settings.holdout_salt
    assert [(c.id, c.kind, c.priority) for c in settings.campaigns] == [
        ("lifecycle", "lifecycle", 10),
        ("double11", "promotion", 100),
    ]
    assert {offer.type for offer in settings.offers} == set(OFFER_TYPES)
    tiers = settings.value_tiers
    assert (tiers.high_quantile, tiers.low_quantile, tiers.max_items) == (0.8, 0.4, 3)
    assert (tiers.min_priority, tiers.gross_margin) == (0.0, 0.3)
    api = settings.api
    assert (api.max_body_bytes, api.body_timeout_seconds, api.now_window_days) == (
        1_000_000,
        10.0,
        730,
    )
    assert api.rate_limits.decide.per_second == 500 and api.bootstrap_key is None


def test_policy_yaml_and_code_defaults_agree(tmp_path: Path) -> None:
    """An empty file gives the code defaults; the packaged policy must say the same."""
    from_code = load_settings(write(tmp_path, "{}\n"))
    assert from_code.model_dump() == load_settings(DEFAULT_CONFIG_PATH).model_dump()


def test_revival_config_env_selects_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIVAL_CONFIG", str(write(tmp_path, "holdout_share: 0.3\n")))
    assert load_settings().holdout_share == 0.3
    assert Settings().holdout_share == 0.3


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "holdout_share: 0.3\nstore_url: sqlite:///other.db\n")
    monkeypatch.setenv("REVIVAL_HOLDOUT_SHARE", "0.2")
    monkeypatch.setenv("REVIVAL_STORE_URL", "postgresql://revival@db:5432/revival")

    settings = load_settings(path)

    assert settings.holdout_share == 0.2
    assert settings.store_url == "postgresql://revival@db:5432/revival"


def test_nested_env_overrides_merge_into_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "channels:\n  sms:\n    cost: 0.03\n    per_day_cap: 2\n    per_week_cap: 4\n"
        "value_tiers:\n  max_items: 4\n",
    )
    monkeypatch.setenv("REVIVAL_CHANNELS__SMS__COST", "0.05")
    monkeypatch.setenv("REVIVAL_QUIET_HOURS__START", "22:30")
    monkeypatch.setenv("REVIVAL_VALUE_TIERS__GROSS_MARGIN", "0.4")

    settings = load_settings(path)

    sms = settings.channel("sms")
    assert sms.cost == 0.05  # env wins
    assert (sms.per_day_cap, sms.per_week_cap) == (2, 4)  # the rest of the YAML entry survives
    assert sms.length_limit == 70  # and unspecified keys keep the SMS defaults
    assert settings.channel("email").cost == 0.002
    assert settings.quiet_hours.start == time(22, 30) and settings.quiet_hours.end == time(9)
    assert (settings.value_tiers.gross_margin, settings.value_tiers.max_items) == (0.4, 4)


def test_partial_channel_keeps_that_channels_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "channels:\n  email:\n    cost: 0.003\n"))
    email = settings.channel("email")
    assert email.cost == 0.003
    assert (email.per_week_cap, email.length_limit, email.identifier) == (3, 2000, "email")
    assert set(settings.channels) == set(CHANNELS)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "channels:\n  sms:\n    per_day_cap: -1\n",
            "channels.sms.per_day_cap: Input should be greater than or equal to 0",
        ),
        ("holdout_share: 1.5\n", "holdout_share: Input should be less than or equal to 1"),
        ("holdout_share: .nan\n", "holdout_share:"),
        ("currency: gbp\n", "currency:"),
        ("default_timezone: Mars/Olympus\n", "default_timezone: unknown IANA time zone"),
        ("default_locale: fr\n", "default_locale:"),
        ("channels:\n  fax:\n    cost: 0.1\n", "channels.fax: unknown channel"),
        ("channels:\n  sms:\n    length_limit: 160\n", "channels.sms.length_limit:"),
        ("channels:\n  email:\n    max_segments: 2\n", "channels.email.max_segments:"),
        ("channels:\n  sms:\n    base_engagement: 1.2\n", "channels.sms.base_engagement:"),
        ("channels:\n  sms:\n    identifier: fax\n", "channels.sms.identifier:"),
        ("channels:\n  sms:\n    provider_url: not a url\n", "channels.sms.provider_url:"),
        ('quiet_hours:\n  start: "25:00"\n', "quiet_hours.start: expected a 24-hour 'HH:MM'"),
        ("quiet_hours:\n  end: 21:00\n", "quiet_hours.end: expected 'HH:MM'; quote it"),
        ("value_tiers:\n  low_quantile: 0.9\n", "value_tiers: low_quantile must be below"),
        ("value_tiers:\n  gross_margin: 2\n", "value_tiers.gross_margin:"),
        (
            "campaigns:\n  - {id: a, kind: promotion, start: 2011-12-01, end: 2011-11-01}\n",
            "campaigns[0]: campaign 'a': start must be before end",
        ),
        ("campaigns:\n  - {id: a, kind: sale}\n", "campaigns[0].kind:"),
        (
            "offers:\n  - {type: low_threshold_coupon, description: {zh-CN: x, en: y}}\n",
            "offers[0]: offer 'low_threshold_coupon' needs discount_pct > 0",
        ),
        (
            "offers:\n  - {type: new_arrivals, description: {zh-CN: '{pct}', en: y}}\n",
            "offers[0].description: zh-CN: unknown placeholder(s) ['pct']",
        ),
        ("offers:\n  - {type: none}\n  - {type: none}\n", "offers: duplicate offer type(s): none"),
    ],
)
def test_invalid_values_name_the_key_and_file(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert isinstance(caught.value, ValueError)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("holdout_sahre: 0.2\n", "holdout_sahre"),
        ("channels:\n  sms:\n    cots: 0.05\n", "channels.sms.cots"),
        ("value_tiers:\n  high_quantle: 0.9\n", "value_tiers.high_quantle"),
        ("campaigns:\n  - {id: a, kind: service, prority: 3}\n", "campaigns[0].prority"),
    ],
)
def test_unknown_keys_are_errors(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{key}: unknown key")):
        load_settings(write(tmp_path, yaml_text))


def test_invalid_env_value_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIVAL_CHANNELS__SMS__PER_WEEK_CAP", "-3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "channels.sms.per_week_cap: Input should be greater than or equal to 0" in message
    assert "REVIVAL_CHANNELS__SMS__PER_WEEK_CAP" in message
    assert str(DEFAULT_CONFIG_PATH) in message


def test_unparsable_env_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIVAL_CAMPAIGNS", "not json")
    with pytest.raises(ConfigError, match="campaigns"):
        load_settings()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("channels: [unclosed\n", "cannot read configuration"),
    ],
)
def test_malformed_yaml_is_a_config_error(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")


def test_quiet_hours_wrap_midnight() -> None:
    night = QuietHours(start="21:00", end="09:00")
    assert night.wraps_midnight
    inside = [time(21), time(23, 59), time(0), time(3, 30), time(8, 59)]
    outside = [time(9), time(12), time(20, 59)]
    assert all(night.contains(t) for t in inside)
    assert not any(night.contains(t) for t in outside)

    lunch = QuietHours(start="12:00", end="13:30")
    assert not lunch.wraps_midnight
    assert lunch.contains(time(12)) and lunch.contains(time(13, 29))
    assert not lunch.contains(time(13, 30)) and not lunch.contains(time(11, 59))

    never = QuietHours(start="10:00", end="10:00")
    assert not any(never.contains(time(h)) for h in range(24))


def test_duplicate_campaign_ids_fail(tmp_path: Path) -> None:
    text = "campaigns:\n  - {id: promo, kind: promotion}\n  - {id: promo, kind: service}\n"
    with pytest.raises(ConfigError, match="campaigns: duplicate campaign id"):
        load_settings(write(tmp_path, text))


def test_campaign_windows_are_local_and_half_open() -> None:
    double11 = next(c for c in load_settings().campaigns if c.id == "double11")
    assert double11.blocks_lower_priority
    assert double11.start == datetime(2011, 11, 1, tzinfo=LONDON)
    assert double11.is_active(datetime(2011, 11, 11, 20, tzinfo=LONDON))
    assert double11.is_active(datetime(2011, 11, 12, 23, 59, tzinfo=LONDON))
    assert not double11.is_active(datetime(2011, 11, 13, tzinfo=LONDON))
    assert not double11.is_active(datetime(2011, 10, 31, 23, 59, tzinfo=LONDON))
    with pytest.raises(ValueError, match="timezone-aware"):
        double11.is_active(datetime(2011, 11, 5))


def test_relative_sqlite_urls_resolve_against_project_root(tmp_path: Path) -> None:
    root = PROJECT_ROOT
    assert resolve_sqlite_url("sqlite:///var/x.db") == f"sqlite:///{root}/var/x.db"
    assert (
        resolve_sqlite_url("sqlite:///../up.db?mode=ro") == f"sqlite:///{root.parent}/up.db?mode=ro"
    )
    assert resolve_sqlite_url("sqlite+pysqlite:///a.db") == f"sqlite+pysqlite:///{root}/a.db"
    for kept in ["sqlite:////abs/x.db", "sqlite://", "sqlite:///:memory:", "postgresql://h/db"]:
        assert resolve_sqlite_url(kept) == kept

    text = "store_url: sqlite:///state/store.db\ndata_path: data/tx.csv\n"
    settings = load_settings(write(tmp_path, text))
    assert settings.store_url == f"sqlite:///{root}/state/store.db"
    assert settings.data_path == root / "data" / "tx.csv"


def test_channel_helper_and_offer_texts(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.channel("sms") is settings.channels["sms"]
    with pytest.raises(KeyError, match="unknown channel 'fax'.*sms"):
        settings.channel("fax")

    coupon = settings.offer("low_threshold_coupon")
    assert coupon.text("en", settings.currency_symbol) == "10% off orders over £20"
    assert coupon.text("zh-CN", settings.currency_symbol) == "满£20立减10%"
    assert settings.offer("none").text("en", settings.currency_symbol) is None
    with pytest.raises(KeyError, match="not in the catalogue"):
        settings.offer("free_pony")

    euro = load_settings(write(tmp_path, "currency: EUR\n"))
    assert euro.offer("low_threshold_coupon").text("en", euro.currency_symbol).endswith("€20")


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.holdout_share = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.channel("sms").cost = 0.0  # type: ignore[misc]
