"""Identity resolution: normalised identifiers, deterministic stitching on hand-made
profiles with known answers, and the profile store (upsert, resolve, merge audit, undo,
over-shared identifiers) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from core.identity import InvalidIdentifier, normalise, profile_id, split_ref, stitch
from core.store import AmbiguousIdentifier, ProfileRecord, UnknownMerge

T0 = datetime(2011, 6, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "raw", "want"),
    [
        ("phone", "07700 900123", "+447700900123"),  # national, read in GB
        ("phone", "+44 (0)7700-900123", "+447700900123"),
        ("phone", "0044 7700 900123", "+447700900123"),
        ("phone", "+86 138 0013 8000", "+8613800138000"),
        ("email", "  Ann.Lee@Example.COM ", "ann.lee@example.com"),
        ("wechat_unionid", " o6_bmasdasdsad6_2sgVt7hMZOPfL ", "o6_bmasdasdsad6_2sgVt7hMZOPfL"),
        ("member_id", " M-001 ", "M-001"),
    ],
)
def test_identifiers_are_normalised(kind, raw, want):
    assert normalise(kind, raw) == want


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("phone", "12"),
        ("phone", "call me"),
        ("email", "ann@"),
        ("wechat_openid", "a b"),
        ("fax", "1"),
    ],
)
def test_a_bad_identifier_names_its_kind(kind, raw):
    with pytest.raises(InvalidIdentifier, match=kind):
        normalise(kind, raw)


def test_profile_ids_and_references():
    assert profile_id("shop", "12345", primary="shop") == "12345"
    assert profile_id("pos", "12345", primary="shop") == "pos:12345"
    assert split_ref("email:ann@example.com") == ("email", "ann@example.com")
    assert split_ref("pos:12345") is None  # a profile id, not an identifier
    assert split_ref("12345") is None


def test_stitching_joins_shared_identifiers_transitively_and_keeps_the_primary_id():
    links = [
        ("pos:7", "email", "a@x.com"),
        ("12", "email", "a@x.com"),
        ("pos:7", "phone", "+441"),
        ("wx:9", "phone", "+441"),
        ("wx:9", "wechat_openid", "oA"),  # openid names, never joins
        ("13", "wechat_openid", "oA"),
        ("14", "email", "b@x.com"),
    ]
    out = stitch(links, limit=3, sources=["shop", "pos", "wx"])
    assert out.customer_of == {"pos:7": "12", "12": "12", "wx:9": "12", "13": "13", "14": "14"}
    assert len(out.merges) == 2 and not out.over_shared
    # the order of the links does not matter
    assert stitch(reversed(links), limit=3, sources=["shop", "pos", "wx"]).customer_of == (
        out.customer_of
    )


def test_an_over_shared_identifier_joins_nobody_and_is_reported():
    links = [(f"m{i}", "phone", "+440") for i in range(3)] + [("m0", "email", "a@x.com")]
    out = stitch(links, limit=3)
    assert out.customer_of == {"m0": "m0", "m1": "m1", "m2": "m2"}
    assert [(s.kind, s.profiles) for s in out.over_shared] == [("phone", 3)]
    # one below the limit joins
    assert stitch(links[1:], limit=3).customer_of == {"m1": "m1", "m2": "m1", "m0": "m0"}


def test_a_blocked_pair_stays_apart_even_through_a_third_profile():
    links = [("a", "email", "e"), ("b", "email", "e"), ("c", "email", "e")]
    out = stitch(links, limit=5, blocked=[("a", "b")])
    assert out.customer_of["a"] != out.customer_of["b"]
    assert out.customer_of["c"] in {out.customer_of["a"], out.customer_of["b"]}


def _p(pid: str, source: str = "shop", **kw) -> ProfileRecord:
    ids = tuple((k, v) for k, v in kw.pop("ids", {}).items())
    return ProfileRecord(profile_id=pid, source=source, identifiers=ids, **kw)


def test_upsert_stitches_resolves_and_combines_facts(store):
    ps = store.profiles
    first = ps.upsert(
        [
            _p("12", ids={"email": "a@x.com"}, country="United Kingdom"),
            _p("pos:7", "pos", ids={"email": "a@x.com", "phone": "+447700900123"}, locale="en"),
        ],
        limit=3,
        sources=["shop", "pos"],
        now=T0,
    )
    assert (first.created, first.updated, len(first.merges)) == (2, 0, 1)
    assert ps.resolve(["pos:7", "12", "phone:+447700900123", "email:a@x.com", "99"]) == {
        "pos:7": "12",
        "12": "12",
        "phone:+447700900123": "12",
        "email:a@x.com": "12",
        "99": "99",  # unknown to the store: its own customer
    }
    # a later update of one member wins for its fact; the other facts stay
    ps.upsert([_p("12", locale="zh-CN", birthday=date(1990, 3, 4))], limit=3, now=T0 + timedelta(1))
    prof = ps.get("12")
    assert prof.members == ("12", "pos:7")
    assert (prof.locale, prof.country, prof.birthday) == (
        "zh-CN",
        "United Kingdom",
        date(1990, 3, 4),
    )
    assert prof.identifiers == {"email": ("a@x.com",), "phone": ("+447700900123",)}
    assert ps.identity_map() == {"pos:7": "12"}
    assert ps.birthdays() == {"12": date(1990, 3, 4)}


def test_a_merge_is_audited_and_undone_for_good(store):
    ps = store.profiles
    ps.upsert(
        [_p("12", ids={"email": "a@x.com"}), _p("pos:7", "pos", ids={"email": "a@x.com"})],
        limit=3,
        sources=["shop", "pos"],
        now=T0,
    )
    [log] = ps.merge_log("12")
    assert (log["survivor"], log["absorbed"], log["reason"]) == ("12", "pos:7", "shared email")
    assert ps.undo(log["merge_id"], by="ops@brand") == ["12", "pos:7"]
    assert ps.resolve(["pos:7"]) == {"pos:7": "pos:7"}
    with pytest.raises(UnknownMerge):
        ps.undo(log["merge_id"], by="ops@brand")
    # importing the same identifiers again does not re-join the pair
    again = ps.upsert([_p("pos:7", "pos", ids={"email": "a@x.com"})], limit=3, now=T0)
    assert again.merges == [] and ps.resolve(["pos:7"]) == {"pos:7": "pos:7"}
    assert ps.merge_log("12")[0]["undone_by"] == "ops@brand"


def test_an_over_shared_phone_merges_nobody_and_cannot_resolve(store):
    ps = store.profiles
    out = ps.upsert(
        [_p(f"m{i}", ids={"phone": "+441234567890"}) for i in range(3)], limit=3, now=T0
    )
    assert out.merges == [] and [s.profiles for s in out.over_shared] == [3]
    assert [s.value for s in ps.over_shared()] == ["+441234567890"]
    assert ps.identity_map() == {}
    with pytest.raises(AmbiguousIdentifier, match="3 customers"):
        ps.resolve(["phone:+441234567890"])


def test_a_merge_carries_the_absorbed_customers_revoke_to_the_survivor(store):
    store.set_consent("pos:7", "sms", False, T0 - timedelta(days=3), "pos till")
    store.set_consent("pos:7", "wechat", True, T0 - timedelta(days=3), "pos till")
    store.set_consent("12", "sms", True, T0 - timedelta(days=9), "web form")
    store.profiles.upsert(
        [_p("12", ids={"email": "a@x.com"}), _p("pos:7", "pos", ids={"email": "a@x.com"})],
        limit=3,
        sources=["shop", "pos"],
        now=T0,
    )
    assert store.consents("12", as_of=T0 + timedelta(1)) == {"sms": False, "wechat": True}
