"""Identifiers and deterministic identity stitching (pure: no store, no I/O).

One person reaches a brand as several *profiles*: a record in one source system (the
online shop's customer, the store POS's member, a WeChat follower), each with identifiers
(phone, e-mail, WeChat openid/unionid, member card). A profile's id is its source id,
qualified by the source unless the source is the primary one (:func:`profile_id`), so the
primary transaction log's ids stay as they are.

*Stitching* is deterministic, the rule-based first stage of identity resolution in a CDP:
two profiles that share a normalised identifier of a stitching kind (e-mail, phone, WeChat
unionid, member id — not the per-app openid) are one customer. An identifier held by
``limit`` or more profiles is *over-shared* (a shop's own phone typed at the till, a
family's e-mail): it joins nobody and is reported. A pair of customers whose merge was
undone is never joined again. The unified customer's id is its *survivor*: the member from
the highest-ranked source (the primary first), then the smallest id — so the primary log's
id survives and its hold-out draws and history stay put.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import phonenumbers

__all__ = [
    "IDENTIFIER_KINDS",
    "STITCH_KINDS",
    "canonical_ref",
    "erasure_hash",
    "InvalidIdentifier",
    "Merge",
    "Shared",
    "Stitching",
    "normalise",
    "profile_id",
    "split_ref",
    "survivor_key",
    "stitch",
]

IDENTIFIER_KINDS = ("phone", "email", "wechat_openid", "wechat_unionid", "member_id")
# openid is per WeChat app (one person has one per official account): it names, never joins
STITCH_KINDS = ("phone", "email", "wechat_unionid", "member_id")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WECHAT = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
_SEPARATOR = ":"


class InvalidIdentifier(ValueError):
    """An identifier that cannot be normalised; the message names its kind and value."""

    def __init__(self, kind: str, value: object, reason: str):
        self.kind = kind
        super().__init__(f"{kind} {value!r}: {reason}")


def normalise(kind: str, value: str, region: str = "GB") -> str:
    """The canonical form of an identifier: a phone in E.164 (parsed by libphonenumber,
    national numbers read in ``region``), an e-mail trimmed and lower-cased, WeChat ids and
    member ids trimmed. Raises :class:`InvalidIdentifier`."""
    if kind not in IDENTIFIER_KINDS:
        raise InvalidIdentifier(kind, value, f"unknown kind; expected one of {IDENTIFIER_KINDS}")
    if not isinstance(value, str) or not value.strip():
        raise InvalidIdentifier(kind, value, "must be a non-empty string")
    text = value.strip()
    if kind == "phone":
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidIdentifier(kind, value, f"not a phone number ({exc})") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidIdentifier(kind, value, "not a possible phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == "email":
        text = text.lower()
        if not _EMAIL.match(text):
            raise InvalidIdentifier(kind, value, "not an e-mail address")
        return text
    if kind.startswith("wechat") and not _WECHAT.match(text):
        raise InvalidIdentifier(kind, value, "a WeChat id is 6-64 letters, digits, _ or -")
    return text


def erasure_hash(customer_id: str) -> str:
    """What the store keeps of an erased id: a SHA-256, enough to keep the id out of the
    next snapshot (a suppression list), not to show it. Ids from a small space can be found
    by trying them all, so the hash is a pseudonym, kept only for that one purpose."""
    return hashlib.sha256(f"revival-erased-v1:{customer_id}".encode()).hexdigest()


def profile_id(source: str, source_id: str, primary: str) -> str:
    """The profile's id: ``source_id`` in the primary source, else ``source:source_id``."""
    return source_id if source == primary else f"{source}{_SEPARATOR}{source_id}"


def split_ref(ref: str) -> tuple[str, str] | None:
    """``("email", "a@b.com")`` for a reference ``"email:a@b.com"`` naming an identifier
    kind; None for anything else (a customer or profile id)."""
    kind, sep, value = ref.partition(_SEPARATOR)
    return (kind, value) if sep and kind in IDENTIFIER_KINDS and value else None


def canonical_ref(ref: str, region: str = "GB") -> str:
    """``ref`` with an identifier's value normalised (``email:Ann@X.com`` →
    ``email:ann@x.com``); any other reference unchanged. Raises :class:`InvalidIdentifier`."""
    named = split_ref(ref)
    return ref if named is None else f"{named[0]}{_SEPARATOR}{normalise(*named, region)}"


@dataclass(frozen=True)
class Merge:
    """``absorbed`` joined ``survivor`` because both hold ``kind`` = ``value``."""

    survivor: str
    absorbed: str
    kind: str
    value: str


@dataclass(frozen=True)
class Shared:
    """An over-shared identifier: held by ``profiles`` profiles (≥ the limit), joins nobody."""

    kind: str
    value: str
    profiles: int


@dataclass
class Stitching:
    """The outcome: each profile's customer, the merges made, the identifiers refused."""

    customer_of: dict[str, str] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    over_shared: list[Shared] = field(default_factory=list)


def _rank(sources: Sequence[str]) -> dict[str, int]:
    return {s: i for i, s in enumerate(sources)}


def survivor_key(pid: str, ranks: Mapping[str, int]) -> tuple[int, str]:
    """Sort key of a survivor: its source's rank (a bare id is the primary's, rank 0)."""
    src, sep, _ = pid.partition(_SEPARATOR)
    return (ranks.get(src, len(ranks)) if sep else 0, pid)


def stitch(
    links: Iterable[tuple[str, str, str]],
    *,
    limit: int,
    sources: Sequence[str] = (),
    current: Mapping[str, str] | None = None,
    blocked: Collection[tuple[str, str]] = (),
) -> Stitching:
    """Join profiles that share an identifier (see module docstring).

    ``links`` are ``(profile_id, kind, value)`` with normalised values; only
    :data:`STITCH_KINDS` join. ``current`` maps profiles to the customer they already belong
    to (earlier merges stand); ``blocked`` pairs of customers (undone merges) stay apart.
    ``sources`` ranks the sources for the survivor rule. Union-find over customers, groups
    visited in sorted order, so the result does not depend on the order of ``links``.
    """
    current = dict(current or {})
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pid, kind, value in links:
        current.setdefault(pid, pid)
        if kind in STITCH_KINDS:
            groups[(kind, value)].add(pid)
    ranks = _rank(sources)
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        root = c
        while parent.get(root, root) != root:
            root = parent[root]
        while c != root:  # path compression
            parent[c], c = root, parent.get(c, c)
        return root

    apart = [(a, b) for a, b in blocked]
    out = Stitching()
    for (kind, value), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        if len(members) >= limit:
            out.over_shared.append(Shared(kind, value, len(members)))
            continue
        for pid in sorted(members):
            a, b = find(current[pid]), find(current[min(members)])
            if a == b or any({find(x), find(y)} == {a, b} for x, y in apart):
                continue
            keep, lose = sorted((a, b), key=lambda c: survivor_key(c, ranks))
            parent[lose] = keep
            out.merges.append(Merge(keep, lose, kind, value))
    out.customer_of = {pid: find(c) for pid, c in current.items()}
    return out
