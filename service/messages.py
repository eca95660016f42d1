"""Message templates and rendering that always fits the channel.

Templates live in ``service/templates/messages.yaml`` (editable by marketing) and are checked on
load: every (intent, locale, channel) exists and uses only known placeholders. Rendering degrades
gracefully when the text is too long - fewer items, then a shortened item name, then no items -
and refuses (:class:`MessageTooLong`) rather than send an over-long SMS. SMS length follows the
GSM-7 / UCS-2 rules, so cost (per segment) and fit are computed the way carriers count them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.config import (
    CHANNELS,
    LOCALES,
    ChannelName,
    ChannelPolicy,
    Locale,
    StrictYamlLoader,
)

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "INTENTS",
    "TEMPLATES_PATH",
    "UNSUBSCRIBE_LINK_PLACEHOLDER",
    "ChannelTemplate",
    "Intent",
    "LocaleRules",
    "MessageTooLong",
    "RenderedMessage",
    "SmsLength",
    "TemplateBook",
    "is_gsm7",
    "load_templates",
    "render_message",
    "sms_length",
]

Intent = Literal[
    "win_back",
    "replenishment",
    "cross_sell",
    "new_arrivals",
    "service_recovery",
    "value_reminder",
    "cart_reminder",
    "care",
    "points_reminder",
]
INTENTS: tuple[Intent, ...] = get_args(Intent)
TEMPLATES_PATH = Path(__file__).resolve().with_name("templates") / "messages.yaml"
UNSUBSCRIBE_LINK_PLACEHOLDER = "{unsubscribe_link}"

# GSM 03.38 default alphabet (127 characters; the escape code 0x1B is not text) and the
# extension table, whose characters take an escape plus the character: 2 septets.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

_REQUIRED_FIELDS = frozenset({"brand", "name"})
_OPTIONAL_FIELDS = frozenset({"items", "offer", "link"})
_MIN_ITEM_CHARS = 6  # an item name cut shorter says nothing; leave the items out instead


class MessageTooLong(ValueError):
    """Even the core sentence with the offer, link and unsubscribe text exceeds the limit."""


@dataclass(frozen=True, slots=True)
class SmsLength:
    """How an SMS body is encoded and billed: ``units`` are septets (GSM-7) or UTF-16 units."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    segments: int


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready to send; ``length`` is in the channel's units (SMS units, else characters).

    ``segments`` is 1 outside SMS, so ``policy.cost * segments`` is the send cost everywhere.
    ``items`` are the item names as shown; ``truncated`` says some were dropped or shortened.
    ``link`` is the landing page even when the text omits it (app push: the tap target).
    """

    intent: Intent
    channel: ChannelName
    locale: Locale
    subject: str | None
    body: str
    length: int
    segments: int
    encoding: str
    unsubscribe_text: str | None
    items: tuple[str, ...]
    truncated: bool
    link: str | None = None


def is_gsm7(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet (basic set plus extension table)."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def _segments(weights: list[int], single: int, part: int) -> int:
    """Parts needed; a 2-unit character (escape pair, surrogate pair) never straddles two parts."""
    if sum(weights) <= single:
        return 1
    count, used = 1, 0
    for weight in weights:
        if used + weight > part:
            count, used = count + 1, 0
        used += weight
    return count


def sms_length(text: str) -> SmsLength:
    """Encoding, length and segment count of an SMS body, as carriers count them.

    GSM-7: basic characters 1 septet, extension characters (^{}[]~\\|€ and form feed) 2;
    160 in one segment, 153 per segment when concatenated. Anything else forces UCS-2:
    UTF-16 code units (an emoji is 2), 70 in one segment, 67 per concatenated segment.
    """
    if is_gsm7(text):
        weights = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return SmsLength("GSM-7", sum(weights), _segments(weights, _GSM7_SINGLE, _GSM7_PART))
    weights = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return SmsLength("UCS-2", sum(weights), _segments(weights, _UCS2_SINGLE, _UCS2_PART))


@cache  # templates are few and fixed; every rendering asks again
def _placeholders(text: str) -> frozenset[str]:
    """Field names used in a template; conversions and format specs are not allowed."""
    fields = set()
    for _, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} must not carry a format spec: {text!r}")
        fields.add(field)
    return frozenset(fields)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelTemplate(_Strict):
    """One (intent, locale, channel) template: optional subject and an ordered sentence list."""

    subject: str | None = None
    body: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_placeholders(self) -> ChannelTemplate:
        core, *rest = self.body
        for label, text, allowed in [
            ("subject", self.subject or "", _REQUIRED_FIELDS),
            ("body[0] (core sentence)", core, _REQUIRED_FIELDS),
            *(
                (f"body[{i}]", s, _REQUIRED_FIELDS | _OPTIONAL_FIELDS)
                for i, s in enumerate(rest, 1)
            ),
        ]:
            if unknown := _placeholders(text) - allowed:
                raise ValueError(
                    f"{label} uses {sorted(unknown)}; allowed here: {sorted(allowed)} in {text!r}"
                )
        return self


class LocaleRules(_Strict):
    """How a locale joins lists and sentences, addresses an unnamed customer and opts out."""

    list_separator: str
    sentence_separator: str
    more_items: str
    fallback_name: str = Field(min_length=1)
    unsubscribe: dict[ChannelName, str]

    @model_validator(mode="after")
    def _complete(self) -> LocaleRules:
        if missing := [c for c in CHANNELS if not self.unsubscribe.get(c)]:
            raise ValueError(f"unsubscribe text missing for {missing}")
        if UNSUBSCRIBE_LINK_PLACEHOLDER not in self.unsubscribe["email"]:
            raise ValueError(
                f"the email unsubscribe text must contain {UNSUBSCRIBE_LINK_PLACEHOLDER}"
            )
        return self


class TemplateBook(_Strict):
    """All templates plus per-locale rules; validated to cover every intent/locale/channel."""

    locales: dict[Locale, LocaleRules]
    templates: dict[Intent, dict[Locale, dict[ChannelName, ChannelTemplate]]]

    @model_validator(mode="after")
    def _complete(self) -> TemplateBook:
        missing = [locale for locale in LOCALES if locale not in self.locales]
        for intent in INTENTS:
            for locale in LOCALES:
                for channel in CHANNELS:
                    template = self.templates.get(intent, {}).get(locale, {}).get(channel)
                    if template is None:
                        missing.append(f"{intent}/{locale}/{channel}")
                    elif (template.subject is None) == (channel == "email"):
                        missing.append(f"{intent}/{locale}/{channel} subject (email only)")
        if missing:
            raise ValueError(f"missing or misplaced: {', '.join(missing)}")
        return self


@cache
def load_templates(path: Path = TEMPLATES_PATH) -> TemplateBook:
    """Read and validate the template file (cached per path); ValueError names the problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=StrictYamlLoader)
        return TemplateBook.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"invalid message templates {path}: {exc}") from exc


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(allowed)}")


def _clean(text: str | None) -> str:
    """Single-line text: collapse whitespace (an item name must not break the layout)."""
    return " ".join(text.split()) if text else ""


def _compose(
    template: ChannelTemplate,
    rules: LocaleRules,
    channel: str,
    values: Mapping[str, str],
    unsubscribe: str | None,
) -> str:
    """Core sentence, every later sentence whose values are present, then the unsubscribe text."""
    joiner = "\n\n" if channel == "email" else rules.sentence_separator
    parts = [template.body[0].format_map(values)]
    for sentence in template.body[1:]:
        if all(values.get(field) for field in _placeholders(sentence) & _OPTIONAL_FIELDS):
            parts.append(sentence.format_map(values))
    if unsubscribe:
        parts.append(unsubscribe)
    return joiner.join(parts).strip()


def _measure(body: str, channel: str, policy: ChannelPolicy) -> tuple[bool, int, int, str]:
    """(fits, length, segments, encoding); SMS keeps ``70 - length_limit`` units in reserve."""
    if channel != "sms":
        return len(body) <= policy.length_limit, len(body), 1, "unicode"
    counted = sms_length(body)
    reserve = max(0, _UCS2_SINGLE - policy.length_limit)
    needed = sms_length(body + " " * reserve).segments if reserve else counted.segments
    return needed <= policy.max_segments, counted.units, counted.segments, counted.encoding


@dataclass(frozen=True, slots=True)
class _Candidate:
    body: str
    values: dict[str, str]
    items: tuple[str, ...]
    truncated: bool
    measured: tuple[bool, int, int, str]  # _measure(body)


@dataclass
class _Search:
    """Renderings of one template from most to least complete; the first that fits wins.

    The order (see :func:`render_message`): per greeting, all item names that could fit then
    one fewer at a time, then the first name cut ever shorter (an ellipsis; in an otherwise
    GSM-7 SMS "..." first, where "…" would force UCS-2), then no items. A shorter cut never
    makes the text longer, nor its encoding wider, so the longest cut that fits is found by
    bisection: a handful of renderings instead of one per character of the name.
    """

    template: ChannelTemplate
    rules: LocaleRules
    channel: str
    policy: ChannelPolicy
    base: dict[str, str]
    names: list[str]
    capacity: int
    unsubscribe: str | None
    shortest: tuple[int, str] = (0, "")

    def first_fit(self, greetings: list[str]) -> _Candidate | None:
        names, capacity = self.names, self.capacity
        fitting, used = 0, -len(self.rules.list_separator)
        for name in names:
            used += len(self.rules.list_separator) + len(name)
            if used > capacity:
                break
            fitting += 1
        for greeting in greetings:
            for keep in range(fitting, 0, -1):
                if found := self._try(greeting, names[:keep], None):
                    return found
            if names:
                best, lo, hi = None, _MIN_ITEM_CHARS, min(len(names[0]) - 1, capacity)
                while lo <= hi:
                    mid = (lo + hi) // 2
                    if found := self._try(greeting, names[:1], mid):
                        best, lo = found, mid + 1
                    else:
                        hi = mid - 1
                if best is not None:
                    return best
            if found := self._try(greeting, [], None):
                return found
        return None

    def _try(self, greeting: str, kept: list[str], width: int | None) -> _Candidate | None:
        """The rendering with these items, if it fits (else remember it if the shortest)."""
        rules = self.rules
        for ellipsis in ("...", "…") if self.channel == "sms" and width else ("…",):
            shown = list(kept)
            if width is not None:
                shown[0] = shown[0][:width].rstrip() + ellipsis
            listed = rules.list_separator.join(shown)
            if shown and len(kept) < len(self.names):
                listed += rules.more_items
            values = {**self.base, "name": greeting, "items": listed}
            body = _compose(self.template, rules, self.channel, values, self.unsubscribe)
            if ellipsis == "..." and not is_gsm7(body):
                continue  # UCS-2 anyway: the one-character ellipsis is shorter
            measured = _measure(body, self.channel, self.policy)
            if measured[0]:
                truncated = len(kept) < len(self.names) or width is not None
                return _Candidate(body, values, tuple(shown), truncated, measured)
            if not self.shortest[1] or measured[1] < self.shortest[0]:
                self.shortest = (measured[1], body)
        return None


def render_message(
    intent: Intent,
    channel: ChannelName,
    locale: Locale,
    *,
    brand: str,
    items: list[str],
    offer_text: str | None,
    channel_policy: ChannelPolicy,
    name: str | None = None,
    link: str | None = None,
) -> RenderedMessage:
    """Render the (intent, channel, locale) template so it fits ``channel_policy``.

    Degrades in this order until it fits: drop items from the end, shorten the first item
    name with an ellipsis, leave the items out, address the customer by the fallback name.
    Offer, link and unsubscribe text are never dropped; MessageTooLong if they cannot fit.
    """
    _check("intent", intent, INTENTS)
    _check("channel", channel, CHANNELS)
    _check("locale", locale, LOCALES)
    brand_text = _clean(brand)
    if not brand_text:
        raise ValueError("brand must not be empty")
    book = load_templates()
    template = book.templates[intent][locale][channel]
    rules = book.locales[locale]
    unsubscribe = rules.unsubscribe[channel] if channel_policy.needs_unsubscribe else None
    capacity = (
        _GSM7_SINGLE * channel_policy.max_segments
        if channel == "sms"
        else channel_policy.length_limit
    )
    search = _Search(
        template,
        rules,
        channel,
        channel_policy,
        base={"brand": brand_text, "offer": _clean(offer_text), "link": _clean(link)},
        names=[cleaned for cleaned in map(_clean, items) if cleaned],
        capacity=capacity,
        unsubscribe=unsubscribe,
    )
    found = search.first_fit(
        list(dict.fromkeys([_clean(name) or rules.fallback_name, rules.fallback_name]))
    )
    if found is not None:
        _, length, segments, encoding = found.measured
        subject = template.subject.format_map(found.values) if template.subject else None
        return RenderedMessage(
            intent=intent,
            channel=channel,
            locale=locale,
            subject=subject,
            body=found.body,
            length=length,
            segments=segments,
            encoding=encoding,
            unsubscribe_text=unsubscribe,
            items=found.items,
            truncated=found.truncated,
            link=_clean(link) or None,
        )
    shortest = search.shortest
    unit = "SMS units" if channel == "sms" else "characters"
    raise MessageTooLong(
        f"{intent}/{channel}/{locale}: even the shortest rendering needs {shortest[0]} {unit}, "
        f"over the channel limit (length_limit={channel_policy.length_limit}, "
        f"max_segments={channel_policy.max_segments}): {shortest[1]!r}"
    )
