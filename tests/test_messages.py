"""SMS counting known answers, and every template fitting every channel it is sent on."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import (
    CHANNELS,
    LOCALES,
    ChannelName,
    ChannelPolicy,
    Locale,
    Settings,
    load_settings,
)
from service.messages import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    INTENTS,
    TEMPLATES_PATH,
    UNSUBSCRIBE_LINK_PLACEHOLDER,
    Intent,
    MessageTooLong,
    RenderedMessage,
    SmsLength,
    load_templates,
    render_message,
    sms_length,
)

BRAND = {"zh-CN": "优选家居", "en": "HomeGoods"}
LINK = "https://hg.example/r/a1"
ASCII_ITEMS = [f"Hand-painted ceramic tea mug, style {i:02d}" for i in range(10)]
CHINESE_ITEMS = [
    f"复古风格陶瓷马克杯带手柄和杯盖适合办公室使用的礼品套装第{i}款加长版本名称" for i in range(10)
]


@pytest.fixture(scope="module")
def policy() -> Settings:
    return load_settings()


def with_changes(base: ChannelPolicy, **changes: object) -> ChannelPolicy:
    """A validated copy of a channel policy."""
    return ChannelPolicy.model_validate({**base.model_dump(), **changes})


def offer_for(config: Settings, locale: Locale, kind: str = "low_threshold_coupon") -> str | None:
    return config.offer(kind).text(locale, config.currency_symbol)


def assert_fits(message: RenderedMessage, channel_policy: ChannelPolicy) -> None:
    """The message respects the channel's limit and carries the unsubscribe text if needed."""
    if message.channel == "sms":
        counted = sms_length(message.body)
        assert (counted.encoding, counted.units, counted.segments) == (
            message.encoding,
            message.length,
            message.segments,
        )
        assert counted.segments <= channel_policy.max_segments
        if channel_policy.max_segments == 1:
            assert counted.units <= (160 if counted.encoding == "GSM-7" else 70)
    else:
        assert message.length == len(message.body) <= channel_policy.length_limit
        assert (message.encoding, message.segments) == ("unicode", 1)
    if channel_policy.needs_unsubscribe:
        assert message.unsubscribe_text
        assert message.body.endswith(message.unsubscribe_text)
    else:
        assert message.unsubscribe_text is None
    assert (message.subject is not None) == (message.channel == "email")


# --- SMS counting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsLength("GSM-7", 0, 1)),
        ("a" * 160, SmsLength("GSM-7", 160, 1)),
        ("a" * 161, SmsLength("GSM-7", 161, 2)),
        ("a" * 306, SmsLength("GSM-7", 306, 2)),
        ("a" * 307, SmsLength("GSM-7", 307, 3)),
        ("€", SmsLength("GSM-7", 2, 1)),
        ("€" * 80, SmsLength("GSM-7", 160, 1)),
        ("€" * 81, SmsLength("GSM-7", 162, 2)),
        ("a" * 159 + "^", SmsLength("GSM-7", 161, 2)),
        ("£$¥@", SmsLength("GSM-7", 4, 1)),
        # an escape pair never straddles two parts: 152 | €+151 | 1
        ("a" * 152 + "€" + "a" * 152, SmsLength("GSM-7", 306, 3)),
        ("中" * 70, SmsLength("UCS-2", 70, 1)),
        ("中" * 71, SmsLength("UCS-2", 71, 2)),
        ("中" * 134, SmsLength("UCS-2", 134, 2)),
        ("中" * 135, SmsLength("UCS-2", 135, 3)),
        ("😀", SmsLength("UCS-2", 2, 1)),
        ("a" * 69 + "😀", SmsLength("UCS-2", 71, 2)),
        ("a" * 159 + "中", SmsLength("UCS-2", 160, 3)),  # one non-GSM character: all UCS-2
        # a surrogate pair never straddles two parts: 66 | 😀+65 | 1
        ("中" * 66 + "😀" + "中" * 66, SmsLength("UCS-2", 134, 3)),
    ],
)
def test_sms_length_known_answers(text: str, expected: SmsLength) -> None:
    assert sms_length(text) == expected


def test_gsm7_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 code points minus the escape
    assert sms_length("".join(sorted(GSM7_BASIC))) == SmsLength("GSM-7", 127, 1)
    for char in "^{}[]~\\|€\f":
        assert char in GSM7_EXTENSION
        assert sms_length(char).units == 2
    for char in "…’“”–—`":  # look ASCII-ish but are not GSM-7
        assert sms_length(char).encoding == "UCS-2"


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400))
def test_sms_length_is_self_consistent(text: str) -> None:
    counted = sms_length(text)
    single, part = (160, 153) if counted.encoding == "GSM-7" else (70, 67)
    assert (counted.segments == 1) == (counted.units <= single)
    assert counted.units <= single or counted.segments * part >= counted.units
    if counted.encoding == "UCS-2":
        assert counted.units == len(text.encode("utf-16-le")) // 2
    else:
        assert counted.units == len(text) + sum(char in GSM7_EXTENSION for char in text)


# --- every template, every channel ----------------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "locale", "channel"), list(itertools.product(INTENTS, LOCALES, CHANNELS))
)
@pytest.mark.parametrize("items", [ASCII_ITEMS, CHINESE_ITEMS], ids=["ascii", "chinese"])
def test_every_template_fits_with_long_item_lists(
    policy: Settings, intent: Intent, locale: Locale, channel: ChannelName, items: list[str]
) -> None:
    channel_policy = policy.channel(channel)
    offer = offer_for(policy, locale)
    message = render_message(
        intent,
        channel,
        locale,
        brand=BRAND[locale],
        items=items,
        offer_text=offer,
        channel_policy=channel_policy,
        name="Alice" if locale == "en" else "王女士",
        link=LINK,
    )
    assert_fits(message, channel_policy)
    assert offer and offer in message.body  # the offer is never dropped
    assert message.link == LINK
    assert (LINK in message.body) == (channel != "app_push")  # push: the tap target
    assert message.truncated == (len(message.items) < 10 or message.items[0] not in items)
    shown = [name.removesuffix("…").removesuffix("...") for name in message.items]
    assert all(original.startswith(s) for original, s in zip(items, shown, strict=False))


def test_chinese_sms_with_chinese_content_is_one_ucs2_segment(policy: Settings) -> None:
    sms = policy.channel("sms")
    assert sms.max_segments == 1
    for intent in INTENTS:
        message = render_message(
            intent,
            "sms",
            "zh-CN",
            brand=BRAND["zh-CN"],
            items=CHINESE_ITEMS[:3],
            offer_text=offer_for(policy, "zh-CN"),
            channel_policy=sms,
        )
        assert message.encoding == "UCS-2"
        assert message.length <= 70 and message.segments == 1
        assert message.body.startswith("【优选家居】")
        assert message.body.endswith("回T退订")


def test_english_sms_stays_gsm7(policy: Settings) -> None:
    """English templates, GSM-7 items and "..." truncation keep the 160-character budget."""
    sms = policy.channel("sms")
    for intent in INTENTS:
        message = render_message(
            intent,
            "sms",
            "en",
            brand=BRAND["en"],
            items=ASCII_ITEMS,
            offer_text=offer_for(policy, "en"),
            channel_policy=sms,
        )
        assert message.encoding == "GSM-7", message.body
        assert "…" not in message.body
        assert message.body.endswith("Reply STOP to opt out")


def test_items_are_dropped_from_the_end_first(policy: Settings) -> None:
    items = ["Teapot", "Mug", "Saucer", "Spoon", "Tray", "Cosy", "Jar", "Lid"] * 5
    message = render_message(
        "cross_sell",
        "app_push",
        "en",
        brand=BRAND["en"],
        items=items,
        offer_text=None,
        channel_policy=policy.channel("app_push"),
    )
    assert 1 < len(message.items) < len(items)
    assert list(message.items) == items[: len(message.items)]
    assert ", ".join(message.items) + " and more" in message.body
    assert message.truncated


def test_a_lone_long_name_is_shortened_with_an_ellipsis(policy: Settings) -> None:
    name = "复古风格陶瓷马克杯" * 10
    message = render_message(
        "replenishment",
        "sms",
        "zh-CN",
        brand=BRAND["zh-CN"],
        items=[name],
        offer_text=None,
        channel_policy=policy.channel("sms"),
    )
    (shown,) = message.items
    assert shown.endswith("…") and name.startswith(shown[:-1])
    assert shown in message.body and message.length <= 70


def test_items_go_before_the_core_does(policy: Settings) -> None:
    sms = policy.channel("sms")
    long_offer = "满£200立减£50,限时三天,全场通用可叠加"
    message = render_message(
        "service_recovery",
        "sms",
        "zh-CN",
        brand=BRAND["zh-CN"],
        items=CHINESE_ITEMS,
        offer_text=long_offer,
        channel_policy=sms,
    )
    assert message.items == () and message.truncated
    assert "上次让您失望了" in message.body and long_offer in message.body


def test_too_long_offer_is_refused_not_sent(policy: Settings) -> None:
    with pytest.raises(MessageTooLong, match="service_recovery/sms/zh-CN"):
        render_message(
            "service_recovery",
            "sms",
            "zh-CN",
            brand=BRAND["zh-CN"],
            items=[],
            offer_text="全场满£200立减£50" * 5,
            channel_policy=policy.channel("sms"),
        )


def test_more_segments_allow_more_content(policy: Settings) -> None:
    one = policy.channel("sms")
    three = with_changes(one, max_segments=3)
    kwargs = dict(brand=BRAND["zh-CN"], items=CHINESE_ITEMS[:3], offer_text=None)
    short = render_message("win_back", "sms", "zh-CN", channel_policy=one, **kwargs)
    long = render_message("win_back", "sms", "zh-CN", channel_policy=three, **kwargs)
    assert short.segments == 1 and len(short.items) < 3
    assert 1 < long.segments <= 3 and long.items == tuple(CHINESE_ITEMS[:3])
    assert_fits(long, three)


def test_sms_length_limit_below_70_is_a_reserve(policy: Settings) -> None:
    kwargs = dict(brand=BRAND["zh-CN"], items=[], offer_text=offer_for(policy, "zh-CN"), link=LINK)
    sms = policy.channel("sms")
    full = render_message("win_back", "sms", "zh-CN", channel_policy=sms, **kwargs)
    assert 60 < full.length <= 70
    reserve = 70 - full.length + 1  # one unit too many
    with pytest.raises(MessageTooLong):
        render_message(
            "win_back",
            "sms",
            "zh-CN",
            channel_policy=with_changes(sms, length_limit=70 - reserve),
            **kwargs,
        )


def test_optional_sentences_and_name_fallback(policy: Settings) -> None:
    push = policy.channel("wechat")
    bare = render_message(
        "win_back", "wechat", "en", brand="HG", items=[], offer_text=None, channel_policy=push
    )
    assert bare.body == "Hi there, long time no see! Remember HG?"
    named = render_message(
        "win_back",
        "wechat",
        "zh-CN",
        brand="HG",
        items=["茶壶"],
        offer_text=None,
        channel_policy=push,
        name="  王女士 ",
    )
    assert named.body == "王女士,好久不见!还记得HG吗?您喜欢的茶壶还在等您。"
    sms = policy.channel("sms")
    anonymous = render_message(
        "win_back", "sms", "zh-CN", brand="HG", items=[], offer_text=None, channel_policy=sms
    )
    assert anonymous.body == "【HG】亲,还记得我们吗?回T退订"


def test_overlong_name_falls_back_instead_of_failing(policy: Settings) -> None:
    message = render_message(
        "win_back",
        "sms",
        "zh-CN",
        brand=BRAND["zh-CN"],
        items=[],
        offer_text=offer_for(policy, "zh-CN"),
        channel_policy=policy.channel("sms"),
        name="欧阳" * 40,
    )
    assert "欧阳" not in message.body and "亲," in message.body


def test_values_are_not_reinterpreted_as_placeholders(policy: Settings) -> None:
    message = render_message(
        "new_arrivals",
        "email",
        "en",
        brand="HG",
        items=["{brand} mug\nwith\tlid"],
        offer_text="{offer}",
        channel_policy=policy.channel("email"),
    )
    assert "New this season: {brand} mug with lid." in message.body
    assert "Just for you: {offer}." in message.body


def test_email_has_subject_and_unsubscribe_footer(policy: Settings) -> None:
    for locale in LOCALES:
        message = render_message(
            "value_reminder",
            "email",
            locale,
            brand=BRAND[locale],
            items=ASCII_ITEMS[:2],
            offer_text=offer_for(policy, locale, "exclusive_discount"),
            channel_policy=policy.channel("email"),
        )
        assert message.subject and BRAND[locale] in message.subject
        assert UNSUBSCRIBE_LINK_PLACEHOLDER in message.unsubscribe_text
        assert message.body.endswith(message.unsubscribe_text)
        assert "\n\n" in message.body


def test_unsubscribe_follows_the_channel_policy(policy: Settings) -> None:
    push = with_changes(policy.channel("app_push"), needs_unsubscribe=True)
    message = render_message(
        "win_back", "app_push", "en", brand="HG", items=[], offer_text=None, channel_policy=push
    )
    assert message.body.endswith("Turn off notifications in Settings.")
    sms = with_changes(policy.channel("sms"), needs_unsubscribe=False)
    message = render_message(
        "win_back", "sms", "en", brand="HG", items=[], offer_text=None, channel_policy=sms
    )
    assert "STOP" not in message.body and message.unsubscribe_text is None


@pytest.mark.parametrize(
    ("intent", "channel", "locale", "word"),
    [
        ("hello", "sms", "en", "intent 'hello'"),
        ("win_back", "fax", "en", "channel 'fax'"),
        ("win_back", "sms", "fr", "locale 'fr'"),
    ],
)
def test_unknown_intent_channel_locale(
    policy: Settings, intent: str, channel: str, locale: str, word: str
) -> None:
    with pytest.raises(ValueError, match=f"unknown {word}"):
        render_message(
            intent,  # type: ignore[arg-type]
            channel,  # type: ignore[arg-type]
            locale,  # type: ignore[arg-type]
            brand="HG",
            items=[],
            offer_text=None,
            channel_policy=policy.channel("sms"),
        )


def test_blank_brand_is_rejected(policy: Settings) -> None:
    with pytest.raises(ValueError, match="brand"):
        sms = policy.channel("sms")
        render_message(
            "win_back", "sms", "en", brand="  ", items=[], offer_text=None, channel_policy=sms
        )


# --- the template file ----------------------------------------------------------------------


def test_english_templates_address_by_hi_name() -> None:
    """ "Hi {name}," is the only form that reads well with the fallback "there"."""
    book = load_templates()
    for intent, channel in itertools.product(INTENTS, CHANNELS):
        template = book.templates[intent]["en"][channel]
        for text in [template.subject or "", *template.body]:
            assert text.count("{name}") == text.count("Hi {name},"), (intent, channel, text)


def broken_copy(tmp_path: Path, edit: Callable[[dict], object]) -> Path:
    data = yaml.safe_load(TEMPLATES_PATH.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "messages.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["templates"]["win_back"]["en"].pop("sms"), "win_back/en/sms"),
        (
            lambda d: d["templates"]["cross_sell"]["zh-CN"]["sms"]["body"].insert(0, "{items}"),
            "core sentence",
        ),
        (lambda d: d["templates"]["cross_sell"]["en"]["sms"]["body"].append("{coupon}"), "coupon"),
        (lambda d: d["templates"]["win_back"]["en"]["email"].pop("subject"), "subject"),
        (lambda d: d["locales"]["en"]["unsubscribe"].update(email="Bye"), "unsubscribe_link"),
        (lambda d: d["templates"]["win_back"]["en"]["sms"].update(colour="red"), "colour"),
    ],
)
def test_broken_template_files_are_rejected(
    tmp_path: Path, edit: Callable[[dict], object], expected: str
) -> None:
    path = broken_copy(tmp_path, edit)
    with pytest.raises(ValueError, match=expected):
        load_templates(path)


def test_packaged_templates_load() -> None:
    book = load_templates()
    assert set(book.templates) == set(INTENTS)
    assert "还记得我们吗" in book.templates["win_back"]["zh-CN"]["sms"].body[0]


# --- property: whatever the items, an SMS fits ----------------------------------------------

_ITEM_CHARS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(sorted(GSM7_EXTENSION - {"\f"})),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.sampled_from(["😀", "🎁", "é", "ß", "…"]),
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.text(_ITEM_CHARS, max_size=60), max_size=15),
    intent=st.sampled_from(INTENTS),
    locale=st.sampled_from(LOCALES),
    offer_kind=st.sampled_from(["none", "low_threshold_coupon", "exclusive_discount"]),
    name=st.one_of(st.none(), st.text(_ITEM_CHARS, max_size=30)),
    link=st.sampled_from([None, LINK]),
    max_segments=st.integers(min_value=1, max_value=3),
)
def test_rendered_sms_always_fits(
    items: list[str],
    intent: Intent,
    locale: Locale,
    offer_kind: str,
    name: str | None,
    link: str | None,
    max_segments: int,
) -> None:
    config = load_settings()
    sms = with_changes(config.channel("sms"), max_segments=max_segments)
    offer = offer_for(config, locale, offer_kind)
    message = render_message(
        intent,
        "sms",
        locale,
        brand=BRAND[locale],
        items=items,
        offer_text=offer,
        channel_policy=sms,
        name=name,
        link=link,
    )
    assert_fits(message, sms)
    assert offer is None or offer in message.body
    assert link is None or link in message.body
    assert message.link == link
