"""The store's SQL schema: append-only tables on SQLAlchemy Core, UTC timestamps.

Every table but ``api_keys``, ``jobs``, the journey state and the profiles (current facts,
with the merge audit beside them) is an append-only log: rows are inserted, never updated or
deleted, so the history can always be audited and replayed. "Current" state (consent, whether a
decision was sent) is derived by reading the log. The one exception is a right-to-erasure
request (:mod:`core.store.erasure`), which re-keys a customer's rows to a tombstone.

Time: every timestamp is stored as UTC (``DateTime(timezone=True)``, :class:`UtcDateTime`);
naive datetimes passed in are taken to be UTC and every datetime handed back is aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from core.store.records import BEHAVIOUR_EVENTS, DISPATCH_STATUSES, EVENT_TYPES, ID_MAX, as_utc

__all__ = [
    "DECISION_COLUMNS",
    "ENROLMENT_STATUSES",
    "EVENT_COLUMNS",
    "JOB_STATUSES",
    "TABLES",
    "BigId",
    "api_keys",
    "behaviour",
    "UtcDateTime",
    "consents",
    "decisions",
    "dispatch_success",
    "dispatches",
    "erased_ids",
    "erasures",
    "events",
    "jobs",
    "journey_control",
    "journey_enrolments",
    "journey_steps",
    "identifiers",
    "merges",
    "metadata",
    "points_ledger",
    "profiles",
    "shared_identifiers",
    "served",
]


class UtcDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always binds and returns aware UTC datetimes.

    Backends without a timezone-aware type (SQLite) store the UTC wall-clock time, so
    string comparison there orders correctly (SQLAlchemy's own ``DATETIME`` text,
    ``YYYY-MM-DD HH:MM:SS.ffffff``; a test pins it).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else as_utc(value)


_Id = sa.String(ID_MAX)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid alias


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", _Id, primary_key=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("campaign_id", _Id, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("send_at", UtcDateTime),
    sa.Column("intent", sa.String(64), nullable=False),
    sa.Column("offer_type", sa.String(64), nullable=False),
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("revive", sa.Boolean, nullable=False),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "campaign_id", "ts"),
    sa.Index(None, "ts"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("campaign_id", _Id),
    sa.Column("decision_id", _Id),  # no FK: events come from outside and may reference anything
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("dedup_key", sa.String(255), unique=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("items", sa.Text),  # a purchase's item ids, JSON list (NULL: none known)
    sa.CheckConstraint(_in("event", EVENT_TYPES), name="event_type"),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "decision_id", "event"),
    sa.Index(None, "ts"),
)

# Behaviour events (:mod:`core.store.behaviour`): carts left, returns, browsing — what the
# customer did, with the items; a table of its own, so stores made before it need no change
# to the ``events`` check constraint.
behaviour = sa.Table(
    "behaviour",
    metadata,
    sa.Column("behaviour_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("items", sa.Text, nullable=False),  # JSON list of item ids
    sa.Column("value", sa.Float),
    sa.Column("dedup_key", sa.String(255), nullable=False, unique=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(_in("event", BEHAVIOUR_EVENTS), name="behaviour_event"),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "event", "ts"),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("consent_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    # a re-delivered consent carries the same key and is stored once (NULL: no key)
    sa.Column("dedup_key", sa.String(255)),
    sa.Index(None, "customer_id", "channel", "ts"),
    sa.Index(None, "dedup_key", unique=True),
)

dispatches = sa.Table(
    "dispatches",
    metadata,
    sa.Column("dispatch_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "decision_id", _Id, sa.ForeignKey("decisions.decision_id"), nullable=False, index=True
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("provider_status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("provider_message_id", sa.String(255)),
    sa.Column("tries", sa.Integer),
    sa.CheckConstraint(_in("status", DISPATCH_STATUSES), name="status"),
    sa.UniqueConstraint("decision_id", "attempt", "status"),
)

# At most one success per decision: the primary key turns a second success into an
# IntegrityError inside the transaction that logs it.
dispatch_success = sa.Table(
    "dispatch_success",
    metadata,
    sa.Column("decision_id", _Id, sa.ForeignKey("decisions.decision_id"), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("provider_status_code", sa.Integer),
    sa.Column("provider_message_id", sa.String(255)),
)

# API keys (:mod:`core.store.keys`): only a SHA-256 of each key is stored. The one update
# this store makes is setting ``revoked_at`` once; a key row is never deleted (audit).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(256), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
)

# What every replica serves (:mod:`core.store.serving`): an append-only log, one row per
# reload; the row with the highest ``generation`` is current.
served = sa.Table(
    "served",
    metadata,
    sa.Column("generation", BigId, primary_key=True, autoincrement=True),
    sa.Column("versions", sa.Text, nullable=False),  # JSON: registered model name -> version
    sa.Column("snapshot", sa.String(255), nullable=False),  # the snapshot's source
    sa.Column("changed_at", UtcDateTime, nullable=False),
    sa.Column("changed_by", sa.String(255), nullable=False),  # host, process and why
)

# Background jobs (:mod:`core.store.jobs`): a job's row is updated by its supervisor while
# it runs (heartbeat, log tail) and once when it ends; rows are never deleted.
JOB_STATUSES = ("running", "succeeded", "failed", "lost")
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer),
    sa.Column("log_path", sa.Text, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("heartbeat_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("returncode", sa.Integer),
    sa.Column("log_tail", sa.Text, nullable=False, server_default=""),
    sa.Column("result", sa.Text),  # JSON summary written by the job
    sa.CheckConstraint(_in("status", JOB_STATUSES), name="job_status"),
    # at most one running job of a kind, across every replica sharing the store
    sa.Index(
        "ix_jobs_one_running",
        "kind",
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
    sa.Index(None, "started_at"),
)

# Journey state (:mod:`core.store.journeys`). An enrolment is unique per journey, customer
# and trigger (enrolling twice is a no-op) and is updated as it moves through its steps; a
# step run is unique per enrolment and step (branches only jump forward), so a step that is
# run again after a crash or by a second agent finds its row and does nothing twice.
ENROLMENT_STATUSES = ("active", "completed", "exited")
journey_enrolments = sa.Table(
    "journey_enrolments",
    metadata,
    sa.Column("enrolment_id", sa.String(40), primary_key=True),
    sa.Column("journey_id", sa.String(48), nullable=False),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("trigger_key", sa.String(255), nullable=False),
    sa.Column("entered_at", UtcDateTime, nullable=False),
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("context", sa.Text, nullable=False),  # JSON: the trigger's items and value
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),  # index of the next step to run
    sa.Column("due_at", UtcDateTime),  # when it runs (NULL once ended)
    sa.Column("note", sa.String(255)),  # why it ended or last waited
    sa.Column("converted_at", UtcDateTime),  # first purchase within the goal window
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", UtcDateTime),
    sa.CheckConstraint(_in("status", ENROLMENT_STATUSES), name="enrolment_status"),
    sa.UniqueConstraint("journey_id", "customer_id", "trigger_key"),
    sa.Index(None, "status", "due_at"),
    sa.Index(None, "customer_id", "entered_at"),
)
journey_steps = sa.Table(
    "journey_steps",
    metadata,
    sa.Column("enrolment_id", sa.String(40), primary_key=True),
    sa.Column("step_id", sa.String(48), primary_key=True),
    sa.Column("journey_id", sa.String(48), nullable=False),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("ran_at", UtcDateTime, nullable=False),  # the agent's clock
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("decision_id", _Id),
    sa.Column("channel", sa.String(32)),
    sa.Column("send_at", UtcDateTime),
    sa.Column("detail", sa.String(255)),
    sa.Column("worker", sa.String(64), nullable=False),
    sa.Index(None, "customer_id", "ran_at"),
    sa.Index(None, "journey_id", "step_id"),
)
# Pauses (admin) and the agent's intake watermark, one row each.
journey_control = sa.Table(
    "journey_control",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # "pause:<journey>" or "intake"
    sa.Column("flag", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
)

# Customer profiles and identity (:mod:`core.store.profiles`). A profile is one source's
# record of a person; ``customer_id`` is the unified customer it belongs to (itself until a
# merge). Identifiers are stored normalised. A merge is an audit row (what, when, why),
# undone by setting ``undone_at`` — an undone pair is never merged again. Over-shared
# identifiers (held by too many profiles to join anyone) are kept for the operator.
profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("profile_id", _Id, primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("locale", sa.String(16)),
    sa.Column("timezone", sa.String(64)),
    sa.Column("country", sa.String(64)),
    sa.Column("birthday", sa.String(10)),  # ISO date; the year may be 1900 (unknown)
    sa.Column("name", sa.String(64)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index(None, "customer_id"),
)
identifiers = sa.Table(
    "identifiers",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(256), primary_key=True),
    sa.Column("profile_id", _Id, primary_key=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index(None, "profile_id"),
)
merges = sa.Table(
    "merges",
    metadata,
    sa.Column("merge_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("survivor", _Id, nullable=False),
    sa.Column("absorbed", _Id, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.String(256)),  # NULL once a member is erased
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("undone_at", UtcDateTime),
    sa.Column("undone_by", sa.String(255)),
    sa.Index(None, "survivor"),
    sa.Index(None, "absorbed"),
)
shared_identifiers = sa.Table(
    "shared_identifiers",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(256), primary_key=True),
    sa.Column("profiles", sa.Integer, nullable=False),
    sa.Column("seen_at", UtcDateTime, nullable=False),
)

# Loyalty points (:mod:`core.store.points`): an append-only ledger. ``earn`` rows are lots
# (positive, expiring at ``expires_at``), ``burn`` rows spend (positive; oldest lots first),
# ``adjust`` rows correct (signed; a positive one is a lot without expiry). The balance is
# computed from the rows, never stored. ``ref`` (an order id, the caller's reference) is
# unique per customer and kind, so a re-delivered earn or burn is stored once.
points_ledger = sa.Table(
    "points_ledger",
    metadata,
    sa.Column("entry_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("note", sa.String(255)),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(_in("kind", ("earn", "burn", "adjust")), name="kind"),
    sa.UniqueConstraint("customer_id", "kind", "ref"),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "expires_at"),
)
# Erasure requests carried out (:mod:`core.store.erasure`): the proof, without the person.
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("tombstone", sa.String(40), primary_key=True),
    sa.Column("erased_at", UtcDateTime, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("rows", sa.Text, nullable=False),  # JSON: table -> rows deleted or anonymised
)
# Hashes of erased ids (:func:`core.identity.erasure_hash`): the suppression list that keeps
# an erased customer out of the next snapshot while the source logs still hold them.
erased_ids = sa.Table(
    "erased_ids",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("tombstone", sa.String(40), nullable=False),
)

TABLES = (
    decisions,
    events,
    behaviour,
    consents,
    dispatches,
    dispatch_success,
    api_keys,
    served,
    jobs,
    journey_enrolments,
    journey_steps,
    journey_control,
    profiles,
    identifiers,
    merges,
    shared_identifiers,
    points_ledger,
)
DECISION_COLUMNS = [c.name for c in decisions.columns]
EVENT_COLUMNS = [c.name for c in events.columns]
