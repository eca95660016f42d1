"""The decision service's one typed settings object.

Values come from a YAML file (the packaged ``service/policy.yaml`` unless ``REVIVAL_CONFIG`` or
an explicit path says otherwise), overridden by ``REVIVAL_*`` environment variables (nested with
``__``, e.g. ``REVIVAL_CHANNELS__SMS__COST=0.05``). Everything is validated at start-up and
unknown keys are rejected, so a typo in the policy fails loudly instead of silently using a
default. Problems surface as :class:`ConfigError` naming the key path and the file.
"""

from __future__ import annotations

import functools
import os
import re
import string
from contextvars import ContextVar
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from core.attribution import (
    DEFAULT_FUTURE_TOLERANCE_SECONDS,
    DEFAULT_MAX_EVENT_ORDER_RATIO,
    MAX_PURCHASE_VALUE,
)
from core.env import PROJECT_ROOT, project_path, resolve_sqlite_url
from features.mapping import LogMapping, read_log_mapping
from service.api_config import ApiSettings
from service.identity_config import IdentitySettings, TransactionSource
from service.loyalty_config import LoyaltySettings

__all__ = [
    "CHANNELS",
    "DEFAULT_CONFIG_PATH",
    "LOCALES",
    "OFFER_TYPES",
    "PROJECT_ROOT",
    "Campaign",
    "CampaignKind",
    "ChannelName",
    "ChannelPolicy",
    "ConfigError",
    "EventLimits",
    "IdentitySettings",
    "TransactionSource",
    "Identifier",
    "Locale",
    "LoyaltySettings",
    "ModelNames",
    "Offer",
    "OfferType",
    "QuietHours",
    "Settings",
    "StrictYamlLoader",
    "describe_validation",
    "ValueTiers",
    "config_path",
    "load_settings",
    "resolve_sqlite_url",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().with_name("policy.yaml")
CONFIG_ENV = "REVIVAL_CONFIG"
ENV_PREFIX = "REVIVAL_"

ChannelName = Literal["sms", "email", "wechat", "app_push"]
Locale = Literal["zh-CN", "en"]
Identifier = Literal["phone", "email", "wechat_openid", "wechat_unionid", "member_id"]
CampaignKind = Literal["lifecycle", "promotion", "service"]
OfferType = Literal[
    "none",
    "value_reminder",
    "new_arrivals",
    "replenishment_reminder",
    "low_threshold_coupon",
    "exclusive_discount",
    "bonus_points",
]
CHANNELS: tuple[ChannelName, ...] = get_args(ChannelName)
LOCALES: tuple[Locale, ...] = get_args(Locale)
OFFER_TYPES: tuple[OfferType, ...] = get_args(OfferType)

SMS_UCS2_SINGLE_SEGMENT = 70
_MONETARY_OFFERS = frozenset({"low_threshold_coupon", "exclusive_discount"})
_OFFER_PLACEHOLDERS = frozenset({"discount_pct", "min_spend", "currency", "points"})
_CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "CNY": "¥", "JPY": "¥"}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

# Where load_settings() points the YAML source for the duration of one Settings() build.
_active_config: ContextVar[Path | None] = ContextVar("revival_active_config", default=None)


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad key path and the file."""


class _Model(BaseModel):
    """Strict, immutable base: unknown keys and non-finite floats are configuration errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ChannelPolicy(_Model):
    """Cost, frequency caps, length rules and dispatch settings of one contact channel.

    For SMS ``length_limit`` is the single-segment capacity in UCS-2 characters (70 by the
    standard; a lower value reserves the difference, e.g. for a carrier-added signature) and
    :mod:`service.messages` applies the GSM-7/UCS-2 counting rules; elsewhere it is characters.
    """

    enabled: bool = True
    cost: float = Field(ge=0, description="currency per message (per segment for SMS)")
    per_day_cap: int = Field(ge=0)
    per_week_cap: int = Field(ge=0)
    length_limit: int = Field(ge=1)
    max_segments: int = Field(default=1, ge=1, le=10, description="SMS only")
    needs_unsubscribe: bool
    identifier: Identifier
    base_engagement: float = Field(ge=0, le=1, description="prior open/click rate")
    provider_url: HttpUrl | None = None
    provider_timeout_s: float = Field(default=5.0, gt=0, le=300)
    provider_max_retries: int = Field(default=2, ge=0, le=10)


@functools.cache
def channel_defaults() -> dict[str, dict[str, Any]]:
    """Per-channel defaults: the ``channels`` block of the packaged ``policy.yaml``.

    The one place they are written. A channel that another configuration file (or the
    environment) leaves out, or gives only partly, keeps these values.
    """
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as handle:
        channels = yaml.load(handle, Loader=StrictYamlLoader)["channels"]
    return {name: dict(channels[name]) for name in CHANNELS}


class QuietHours(_Model):
    """Local-time window with no sends; ``start > end`` wraps midnight, ``start == end`` is none."""

    start: time = time(21, 0)
    end: time = time(9, 0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, time):
            return value
        if isinstance(value, str) and (match := _HHMM.match(value.strip())):
            return time(int(match[1]), int(match[2]))
        if isinstance(value, int):
            raise ValueError("expected 'HH:MM'; quote it in YAML, where unquoted 21:00 is a number")
        raise ValueError(f"expected a 24-hour 'HH:MM' time, got {value!r}")

    @property
    def wraps_midnight(self) -> bool:
        """True when the window runs past midnight (e.g. 21:00-09:00)."""
        return self.start > self.end

    def contains(self, moment: time) -> bool:
        """Whether the local wall-clock ``moment`` falls inside the window (end exclusive)."""
        moment = moment.replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class Campaign(_Model):
    """A campaign; ``[start, end)`` is its active window (open-ended when omitted)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: CampaignKind
    priority: int = 0
    start: datetime | None = None
    end: datetime | None = None
    blocks_lower_priority: bool = False

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_is_midnight(cls, value: Any) -> Any:
        # YAML turns an unquoted 2011-11-01 into a date; read it as that day's midnight.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Campaign:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"campaign {self.id!r}: start must be before end")
        return self

    def is_active(self, at: datetime) -> bool:
        """Whether the timezone-aware instant ``at`` lies inside the campaign window."""
        if at.tzinfo is None:
            raise ValueError("Campaign.is_active needs a timezone-aware datetime")
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


class Offer(_Model):
    """One catalogue offer; ``description`` may use {discount_pct}, {min_spend}, {currency}
    and {points} (``bonus_points``: the points granted with the next order, costing
    ``points * loyalty.point_value``)."""

    type: OfferType
    discount_pct: float = Field(default=0.0, ge=0, le=100)
    min_spend: float = Field(default=0.0, ge=0)
    points: int = Field(default=0, ge=0, le=1_000_000, description="bonus_points only")
    cost_rate: float = Field(default=0.0, ge=0, le=1, description="incentive cost / order value")
    description: dict[Locale, str] = Field(default_factory=dict)

    @field_validator("description")
    @classmethod
    def _known_placeholders(cls, value: dict[str, str]) -> dict[str, str]:
        for locale, text in value.items():
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as exc:
                raise ValueError(f"{locale}: {exc}") from None
            if unknown := fields - _OFFER_PLACEHOLDERS:
                raise ValueError(
                    f"{locale}: unknown placeholder(s) {sorted(unknown)}; "
                    f"allowed: {sorted(_OFFER_PLACEHOLDERS)}"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Offer:
        if self.type in _MONETARY_OFFERS and self.discount_pct <= 0:
            raise ValueError(f"offer {self.type!r} needs discount_pct > 0")
        if self.type not in _MONETARY_OFFERS and self.discount_pct != 0:
            raise ValueError(f"offer {self.type!r} carries no discount; set discount_pct to 0")
        if (self.type == "bonus_points") != (self.points > 0):
            raise ValueError(
                "offer 'bonus_points' needs points > 0"
                if self.type == "bonus_points"
                else f"offer {self.type!r} grants no points; set points to 0"
            )
        if self.type != "none" and (
            missing := [lc for lc in LOCALES if not self.description.get(lc)]
        ):
            raise ValueError(f"offer {self.type!r} needs a description for {missing}")
        return self

    def text(self, locale: Locale, currency_symbol: str) -> str | None:
        """The customer-facing offer text in ``locale`` (None when there is nothing to say)."""
        template = self.description.get(locale, "")
        if not template:
            return None
        money = f"{self.min_spend:.0f}" if self.min_spend.is_integer() else f"{self.min_spend:.2f}"
        return template.format(
            discount_pct=f"{self.discount_pct:g}",
            min_spend=money,
            currency=currency_symbol,
            points=self.points,
        )


class ModelNames(_Model):
    """Registered MLflow model name for each model role."""

    churn: str = Field(default="churn", min_length=1)
    next_purchase: str = Field(default="next_purchase", min_length=1)
    cross_sell: str = Field(default="cross_sell", min_length=1)
    offer_uplift: str = Field(default="offer_uplift", min_length=1)


class ValueTiers(_Model):
    """Value-tier cut-offs plus the economics used when deciding."""

    high_quantile: float = Field(default=0.8, gt=0, lt=1)
    low_quantile: float = Field(default=0.4, gt=0, lt=1)
    max_items: int = Field(default=3, ge=1, description="items named in one offer")
    min_priority: float = Field(default=0.0, description="revive only above this (currency)")
    gross_margin: float = Field(default=0.3, ge=0, le=1, description="value = revenue x margin")

    @model_validator(mode="after")
    def _ordered(self) -> ValueTiers:
        if self.low_quantile >= self.high_quantile:
            raise ValueError("low_quantile must be below high_quantile")
        return self


class EventLimits(_Model):
    """What ``/events`` accepts and what retraining trusts of the events it stored."""

    future_tolerance_seconds: float = Field(
        default=DEFAULT_FUTURE_TOLERANCE_SECONDS,
        ge=0,
        le=86_400,
        description="an event/consent ts may be this far ahead",
    )
    max_purchase_value: float = Field(
        default=MAX_PURCHASE_VALUE, gt=0, le=1e12, description="largest purchase value accepted"
    )
    max_event_order_ratio: float = Field(
        default=DEFAULT_MAX_EVENT_ORDER_RATIO,
        gt=0,
        le=1000,
        description="retraining refuses a week whose event orders exceed this x its reference",
    )


def _default_campaigns() -> list[dict[str, Any]]:
    return [
        {"id": "lifecycle", "kind": "lifecycle", "priority": 10},
        {
            "id": "double11",
            "kind": "promotion",
            "priority": 100,
            "start": datetime(2011, 11, 1),
            "end": datetime(2011, 11, 13),
            "blocks_lower_priority": True,
        },
    ]


def _default_offers() -> list[dict[str, Any]]:
    zh_en = {
        "none": ("", ""),
        "value_reminder": ("会员专属权益", "member-only perks"),
        "new_arrivals": ("新品抢先看", "an early look at new arrivals"),
        "replenishment_reminder": ("常购好物一键补货", "one-tap reorder of your favourites"),
        "low_threshold_coupon": (
            "满{currency}{min_spend}立减{discount_pct}%",
            "{discount_pct}% off orders over {currency}{min_spend}",
        ),
        "exclusive_discount": ("专属{discount_pct}%折扣", "an exclusive {discount_pct}% off"),
        "bonus_points": ("下单额外赠送{points}积分", "{points} bonus points with your next order"),
    }
    numbers = {
        "low_threshold_coupon": {"discount_pct": 10.0, "min_spend": 20.0, "cost_rate": 0.08},
        "exclusive_discount": {"discount_pct": 20.0, "min_spend": 0.0, "cost_rate": 0.18},
        "bonus_points": {"points": 100},
    }
    return [
        {
            "type": kind,
            **numbers.get(kind, {}),
            "description": {"zh-CN": zh, "en": en} if zh else {},
        }
        for kind, (zh, en) in zh_en.items()
    ]


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (a silent last-one-wins is a typo trap)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


class _StrictYamlSource(YamlConfigSettingsSource):
    """The pydantic-settings YAML source, reading with duplicate-key and shape checks."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            with open(file_path, encoding="utf-8") as handle:
                data = yaml.load(handle, Loader=StrictYamlLoader)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration {file_path}: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"configuration {file_path} must be a mapping at the top level")
        return data


def config_path(path: str | Path | None = None) -> Path:
    """The YAML file to load: ``path``, else env ``REVIVAL_CONFIG``, else the packaged policy."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    return Path(chosen).expanduser()


class Settings(BaseSettings):
    """Every knob of the decision service; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$")
    store_url: str = Field(default="sqlite:///var/revival.db", min_length=1)
    data_path: Path = Path("../shared/data/online_retail_II.csv.gz")
    data_mapping: Path | None = Field(
        default=None,
        description="a column mapping (features.mapping) for a data_path in no known format",
    )
    mlflow_tracking_uri: str = Field(default="sqlite:///mlflow/mlflow.db", min_length=1)
    model_names: ModelNames = ModelNames()
    model_alias: str = Field(default="champion", min_length=1)
    replica_sync_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="how often a replica checks the store for versions another one published",
    )
    journeys_tick_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="how often the journey agent (python -m service.journeys) ticks",
    )
    snapshot: str = Field(
        default="newest",
        min_length=1,
        description="the snapshot served: newest (stored by training, else data_path), "
        "data (featurise data_path) or an MLflow run id (pinned)",
    )

    channels: dict[ChannelName, ChannelPolicy] = Field(default_factory=dict)
    global_weekly_cap: int = Field(default=4, ge=0)
    quiet_hours: QuietHours = QuietHours()
    default_timezone: str = "Europe/London"
    default_locale: Locale = "zh-CN"
    reminder_days_before: int = Field(default=3, ge=0)
    brand: str = Field(default="Revival", min_length=1, max_length=40)
    landing_url: HttpUrl | None = None
    implied_consent: list[ChannelName] = Field(default_factory=lambda: ["email"])
    account_identifiers: list[Identifier] = Field(default_factory=lambda: ["member_id", "email"])
    channel_selection: Literal["mean", "thompson"] = Field(
        default="mean", description="channel rule: posterior mean, or Thompson sampling"
    )
    engagement_half_life_days: float = Field(
        default=90.0, gt=0, le=3650, description="recency half-life of engagement outcomes"
    )

    holdout_share: float = Field(default=0.1, ge=0, le=1)
    holdout_salt: str = Field(default="revival-holdout-v1", min_length=1)
    attribution_window_days: float = Field(
        default=14.0, gt=0, le=365, description="a purchase counts for a decision this long"
    )

    campaigns: list[Campaign] = Field(default_factory=_default_campaigns)
    offers: list[Offer] = Field(default_factory=_default_offers)
    value_tiers: ValueTiers = ValueTiers()
    api: ApiSettings = ApiSettings()
    events: EventLimits = EventLimits()
    identity: IdentitySettings = IdentitySettings()
    loyalty: LoyaltySettings = LoyaltySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: constructor arguments, then ``REVIVAL_*`` env, then the YAML file."""
        file = _active_config.get() or config_path()
        if not file.is_file():
            raise ConfigError(f"configuration file not found: {file}")
        return init_settings, env_settings, _StrictYamlSource(settings_cls, yaml_file=file)

    @field_validator("store_url", "mlflow_tracking_uri")
    @classmethod
    def _absolute_sqlite(cls, value: str) -> str:
        return resolve_sqlite_url(value)

    @field_validator("data_path")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        return project_path(value)

    @field_validator("data_mapping")
    @classmethod
    def _readable_mapping(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = project_path(value)
        read_log_mapping(path)  # a bad mapping stops start-up, naming the file and key
        return path

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _fill_channel_defaults(cls, value: Any) -> Any:
        # Channels left out (or partly given) keep their per-channel defaults.
        if not isinstance(value, dict):
            return value
        if unknown := [name for name in value if name not in CHANNELS]:
            expected = f"unknown channel; expected one of {', '.join(CHANNELS)}"
            raise ValidationError.from_exception_data(
                "channels", [_error((str(name),), expected, name) for name in unknown]
            )
        merged: dict[Any, Any] = {name: dict(spec) for name, spec in channel_defaults().items()}
        for name, given in value.items():
            merged[name] = {**merged[name], **given} if isinstance(given, dict) else given
        return merged

    @field_validator("channels")
    @classmethod
    def _sms_only_rules(cls, value: dict[str, ChannelPolicy]) -> dict[str, ChannelPolicy]:
        errors: list[InitErrorDetails] = []
        for name, policy in value.items():
            if name == "sms" and policy.length_limit > SMS_UCS2_SINGLE_SEGMENT:
                errors.append(
                    _error(
                        (name, "length_limit"),
                        "the SMS single-segment limit is at most 70 (UCS-2 characters); "
                        "GSM-7's 160 is applied automatically",
                        policy.length_limit,
                    )
                )
            if name != "sms" and policy.max_segments != 1:
                errors.append(_error((name, "max_segments"), "max_segments applies to SMS only", 1))
        if errors:
            raise ValidationError.from_exception_data("channels", errors)
        return value

    @field_validator("campaigns")
    @classmethod
    def _unique_and_localised(cls, value: list[Campaign], info: ValidationInfo) -> list[Campaign]:
        ids = [campaign.id for campaign in value]
        if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate campaign id(s): {', '.join(duplicates)}")
        zone_name = info.data.get("default_timezone")
        if zone_name is None:  # the zone itself was invalid and is reported on its own
            return value
        zone = ZoneInfo(zone_name)
        return [
            campaign.model_copy(
                update={
                    "start": _localise(campaign.start, zone),
                    "end": _localise(campaign.end, zone),
                }
            )
            for campaign in value
        ]

    @field_validator("offers")
    @classmethod
    def _unique_offer_types(cls, value: list[Offer]) -> list[Offer]:
        kinds = [offer.type for offer in value]
        if duplicates := sorted({k for k in kinds if kinds.count(k) > 1}):
            raise ValueError(f"duplicate offer type(s): {', '.join(duplicates)}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        """``default_timezone`` as a ZoneInfo."""
        return ZoneInfo(self.default_timezone)

    def to_utc(self, dt: datetime) -> datetime:
        """A caller's time as aware UTC: a naive one is wall-clock time in ``default_timezone``."""
        if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
            dt = dt.replace(tzinfo=self.zone)
        return dt.astimezone(UTC)

    @property
    def currency_symbol(self) -> str:
        """Symbol used in offer texts (the ISO code plus a space when no symbol is known)."""
        return _CURRENCY_SYMBOLS.get(self.currency, f"{self.currency} ")

    @property
    def log_mapping(self) -> LogMapping | None:
        """``data_mapping`` read (checked at start-up), or None for a known format."""
        return read_log_mapping(self.data_mapping) if self.data_mapping else None

    def channel(self, name: str) -> ChannelPolicy:
        """The policy of channel ``name``; KeyError naming the known channels otherwise."""
        try:
            return self.channels[name]  # type: ignore[index]
        except KeyError:
            known = ", ".join(self.channels)
            raise KeyError(f"unknown channel {name!r}; configured channels: {known}") from None

    def offer(self, offer_type: str) -> Offer:
        """The catalogue entry of ``offer_type``; KeyError naming the known types otherwise."""
        for offer in self.offers:
            if offer.type == offer_type:
                return offer
        known = ", ".join(offer.type for offer in self.offers)
        raise KeyError(f"offer {offer_type!r} is not in the catalogue; catalogue: {known}")


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("config_rule", message), loc=loc, input=value)


def _localise(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    """Naive campaign datetimes are wall-clock times in the default time zone."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone)


def _key_path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def describe_validation(exc: ValidationError, source: str, what: str = "configuration") -> str:
    """A validation error as ``invalid <what> (<source>):`` and one line per bad key path."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        lines.append(f"  {_key_path(error['loc'])}: {message}")
    return f"invalid {what} ({source}):\n" + "\n".join(lines)


def _source(file: Path) -> str:
    """The file plus the names (never the values) of any REVIVAL_* env overrides."""
    overrides = sorted(
        key for key in os.environ if key.upper().startswith(ENV_PREFIX) and key != CONFIG_ENV
    )
    return f"{file}" + (f" with env overrides {', '.join(overrides)}" if overrides else "")


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate the settings from ``path`` (see :func:`config_path`) plus env overrides.

    Raises ConfigError naming every invalid key path and the file it was read from.
    """
    file = config_path(path)
    token = _active_config.set(file)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc, _source(file))) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration ({_source(file)}): {exc}") from exc
    finally:
        _active_config.reset(token)
