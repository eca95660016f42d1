"""Brand offer uplift: which offer (or none) moves *this brand's* customers, learned from the
decision service's own randomised hold-out (issue #5, item 4).

**Campaign table** (:func:`campaign_table`), one row per decision of an eligible customer
(attributed by :func:`core.attribution.attribute`):

* treated: decisions that contacted the customer (``contact``, not hold-out); the arm is the
  offer they were sent (``offer_type``);
* control: hold-out decisions (eligible, logged, never sent) of the same campaigns. The
  hold-out is a hash of (customer, campaign), independent of the customer's features and of
  the offer the policy chose, so among the customers the policy gave offer ``o`` it is a
  randomised control for ``o``. With ``matched_control`` (default) arm ``o`` is compared with
  the hold-out decisions whose policy offer was ``o`` too — the clean randomised comparison
  (propensity = the treated share, constant); without it, with every hold-out decision of
  the arm's campaigns (more rows, but customers the policy would not have given ``o``).
  Only campaigns with both treated and hold-out decisions are kept;
* features: the customer's feature snapshot at the cutoff the decision was made on
  (``payload.snapshot_at``), rebuilt by :func:`features.snapshot.build_features` from the
  log — the function and cutoff the service used;
* outcome: ``converted`` (an order credited within the attribution window) and ``revenue``.

Point in time: the snapshot uses only log rows strictly before its cutoff; a decision is kept
only if made at or after its snapshot (``decided_at >= snapshot_at``); its outcome counts
purchases in ``[decided_at, decided_at + window)``. So every feature predates the treatment
and the treatment predates the outcome (purchases after the snapshot, e.g. the store's
events appended to the training log, cannot reach the features). Decisions whose window is
still open at ``observed_until`` are dropped: their outcome is not known yet.

**Learner** (:func:`fit_brand_uplift`): per arm with at least ``min_treated`` treated and
``min_control`` control rows (else skipped, the reason logged and returned), the X-learner of
:mod:`training.uplift` (Künzel et al. 2019; propensity = the arm's treated share, the
hold-out design) on the snapshot model features (:func:`features.snapshot.model_columns`),
outcome ``converted``. Judged by the Qini coefficient (Radcliffe 2007, as scikit-uplift's
``qini_auc_score``) on the held-out halves of ``n_splits`` 50/50 splits stratified by
treatment × outcome, then refitted on every row of the arm. :func:`register_brand_uplift`
registers the arms as one ``offer_uplift`` pyfunc (metadata: arms, feature columns,
``trained_on``) behind the champion gate: metric ``offer_qini.converted`` = the
treated-weighted mean of the arms' Qini, baseline random targeting (0). A Hillstrom champion
carries no such tag, so the first brand model that beats random replaces it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.snapshot import build_features, model_columns
from training.registry import GateDecision, champion_gate, metric_tag
from training.uplift import (
    CONTROL,
    MODEL_NAME,
    OfferUplift,
    UpliftParams,
    XLearnerUplift,
    log_offer_uplift,
    uplift_report,
)

__all__ = [
    "ARM_COLUMNS",
    "BRAND_GATE_METRIC",
    "BrandUplift",
    "CampaignTable",
    "OfferLearningConfig",
    "arm_rows",
    "campaign_table",
    "decision_snapshots",
    "fit_brand_uplift",
    "register_brand_uplift",
    "snapshot_features",
]

log = logging.getLogger(__name__)

BRAND_GATE_METRIC = "offer_qini.converted"
OUTCOME = "converted"
ARM_COLUMNS = [
    "arm",
    "treated",
    "control",
    "treated_rate",
    "control_rate",
    "observed_uplift",
    "revenue_uplift",
    "predicted_uplift",
    "qini_mean",
    "qini_std",
    "auuc_mean",
    "fitted",
    "reason",
]


@dataclass
class OfferLearningConfig:
    """How much randomised data an arm needs, and the (small-table) learner settings."""

    min_treated: int = 200
    min_control: int = 200
    matched_control: bool = True
    n_splits: int = 3
    seed: int = 0
    params: UpliftParams = field(
        default_factory=lambda: UpliftParams(
            num_rounds=50, learning_rate=0.05, num_leaves=4, min_data_in_leaf=50, lambda_l2=10.0
        )
    )


@dataclass
class CampaignTable:
    """Treated and hold-out decisions with their features and outcomes (module docstring)."""

    frame: pd.DataFrame  # decision_id, …, treatment, policy_offer, converted, revenue, features
    feature_columns: list[str]
    dropped: dict[str, int]

    def counts(self) -> pd.DataFrame:
        """Rows and conversions per (treatment, policy offer)."""
        f = self.frame
        if f.empty:
            return pd.DataFrame(columns=["treatment", "policy_offer", "rows", "converted"])
        return (
            f.groupby(["treatment", "policy_offer"], sort=True)
            .agg(rows=("decision_id", "size"), converted=("converted", "sum"))
            .reset_index()
        )


@dataclass
class BrandUplift:
    """What :func:`fit_brand_uplift` fitted (``offer`` is None when no arm had enough rows)."""

    offer: OfferUplift | None
    arms: pd.DataFrame  # ARM_COLUMNS, one row per arm seen (fitted or skipped)
    gate_value: float
    skipped: dict[str, str]


def decision_snapshots(decisions: pd.DataFrame) -> pd.Series:
    """``decision_id`` → the snapshot time (UTC) the decision was made on, from its payload
    (``store.decisions_between`` frame); NaT where the payload does not say."""

    def snap(payload: Any) -> Any:
        return payload.get("snapshot_at") if isinstance(payload, Mapping) else None

    values = decisions["payload"].map(snap) if "payload" in decisions else None
    ts = pd.to_datetime(
        values if values is not None else pd.Series([None] * len(decisions)), utc=True
    )
    return pd.Series(
        ts.to_numpy(), index=decisions["decision_id"].astype(str).to_numpy(), name="snapshot_at"
    )


def snapshot_features(
    transactions: pd.DataFrame, snapshot_ats: Iterable[Any], timezone: str
) -> dict[pd.Timestamp, pd.DataFrame]:
    """The feature snapshot at each distinct decision snapshot (UTC) — rebuilt as the
    service built it: the log's wall-clock cutoff in ``timezone``, rows strictly before it."""
    out: dict[pd.Timestamp, pd.DataFrame] = {}
    for at in sorted({pd.Timestamp(a) for a in snapshot_ats if pd.notna(a)}):
        cutoff = at.tz_convert(timezone).tz_localize(None)
        out[at] = build_features(transactions, cutoff)
    return out


def campaign_table(
    attributed: pd.DataFrame,
    snapshot_at: pd.Series,
    features: Mapping[pd.Timestamp, pd.DataFrame],
    *,
    window: timedelta,
    observed_until: datetime,
) -> CampaignTable:
    """Treated and hold-out decisions with their snapshot features and outcomes.

    ``attributed``: :func:`core.attribution.attribute`'s frame; ``snapshot_at``: decision_id →
    snapshot time (:func:`decision_snapshots`); ``features``: snapshot time → feature frame
    (:func:`snapshot_features`). Rows that cannot be used are counted in ``dropped`` by reason.
    """
    a = attributed.reset_index(drop=True)
    dropped: dict[str, int] = {}

    def drop(mask: np.ndarray | pd.Series, reason: str) -> None:
        nonlocal a
        m = np.asarray(mask, bool)
        if m.any():
            dropped[reason] = dropped.get(reason, 0) + int(m.sum())
            a = a.loc[~m].reset_index(drop=True)

    holdout = a["holdout"].astype(bool)
    treated = a["contact"].astype(bool) & ~holdout
    drop(~(holdout | treated) & ~a["revive"].astype(bool), "not eligible (revive false)")
    holdout = a["holdout"].astype(bool)
    treated = a["contact"].astype(bool) & ~holdout
    drop(~(holdout | treated), "eligible but not contacted (no channel)")
    snaps = snapshot_at.reindex(a["decision_id"].astype(str)).to_numpy()
    a = a.assign(snapshot_at=pd.to_datetime(snaps, utc=True))
    drop(a["snapshot_at"].isna(), "no snapshot_at in the decision payload")
    decided = pd.to_datetime(a["decided_at"], utc=True)
    drop(decided < a["snapshot_at"], "decided before its snapshot (features would leak)")
    decided = pd.to_datetime(a["decided_at"], utc=True)
    drop(decided + window > pd.Timestamp(observed_until), "attribution window still open")
    arm = np.where(a["holdout"].astype(bool), CONTROL, a["offer_type"].astype(str))
    a = a.assign(treatment=arm, policy_offer=a["offer_type"].astype(str))
    both = a.groupby("campaign_id")["treatment"].agg(
        lambda t: bool((t == CONTROL).any() and (t != CONTROL).any())
    )
    drop(~a["campaign_id"].map(both).astype(bool), "campaign without both treated and hold-out")

    cols: list[str] = []
    parts = []
    for at, rows in a.groupby("snapshot_at", sort=True):
        feats = features.get(pd.Timestamp(at))
        if feats is None:
            raise ValueError(f"no feature snapshot given for snapshot_at {at}")
        cols = cols or model_columns(feats)
        ids = rows["customer_id"].astype(str)
        known = ids.isin(feats.index.astype(str)).to_numpy()
        if not known.all():
            reason = "customer not in its snapshot"
            dropped[reason] = dropped.get(reason, 0) + int((~known).sum())
        rows = rows.loc[known].reset_index(drop=True)
        x = feats.reindex(ids[known].to_numpy())[cols].reset_index(drop=True)
        parts.append(pd.concat([rows, x], axis=1))
    frame = pd.concat(parts, ignore_index=True) if parts else a.iloc[0:0].copy()
    keep = [
        "decision_id",
        "customer_id",
        "campaign_id",
        "snapshot_at",
        "decided_at",
        "treatment",
        "policy_offer",
        "converted",
        "revenue",
        "orders",
    ]
    frame = frame.assign(converted=frame["converted"].astype(int))[keep + cols]
    return CampaignTable(frame.reset_index(drop=True), cols, dropped)


def arm_rows(table: CampaignTable, arm: str, matched_control: bool = True) -> pd.DataFrame:
    """The rows of one arm's comparison: its treated decisions and their control (module
    docstring), with ``t`` = 1 for treated."""
    f = table.frame
    treated = f["treatment"] == arm
    campaigns = set(f.loc[treated, "campaign_id"])
    control = (f["treatment"] == CONTROL) & f["campaign_id"].isin(campaigns)
    if matched_control:
        control &= f["policy_offer"] == arm
    rows = f.loc[treated | control]
    return rows.assign(t=(rows["treatment"] == arm).astype(int).to_numpy())


def _halves(t: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """A 50/50 split stratified by treatment × outcome (by treatment alone if a stratum is
    too small); True = fitting half."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(t))
    try:
        fit, _ = train_test_split(idx, test_size=0.5, random_state=seed, stratify=t * 2 + y)
    except ValueError:
        fit, _ = train_test_split(idx, test_size=0.5, random_state=seed, stratify=t)
    mask = np.zeros(len(t), bool)
    mask[fit] = True
    return mask


def _fit(x: pd.DataFrame, t: np.ndarray, y: np.ndarray, params: UpliftParams) -> XLearnerUplift:
    return XLearnerUplift(params, propensity=None).fit(x, t, y)


def fit_brand_uplift(table: CampaignTable, cfg: OfferLearningConfig) -> BrandUplift:
    """One X-learner per offer arm with enough randomised rows (module docstring)."""
    cols = table.feature_columns
    arms = sorted(set(table.frame["treatment"]) - {CONTROL})
    rows_out: list[dict[str, Any]] = []
    models: dict[str, XLearnerUplift] = {}
    skipped: dict[str, str] = {}
    for arm in arms:
        rows = arm_rows(table, arm, cfg.matched_control)
        t = rows["t"].to_numpy()
        y = rows[OUTCOME].to_numpy().astype(int)
        rev = rows["revenue"].to_numpy(float)
        n_t, n_c = int(t.sum()), int((1 - t).sum())
        rec: dict[str, Any] = {
            "arm": arm,
            "treated": n_t,
            "control": n_c,
            "treated_rate": float(y[t == 1].mean()) if n_t else math.nan,
            "control_rate": float(y[t == 0].mean()) if n_c else math.nan,
            "revenue_uplift": float(rev[t == 1].mean() - rev[t == 0].mean())
            if n_t and n_c
            else math.nan,
            "predicted_uplift": math.nan,
            "qini_mean": math.nan,
            "qini_std": math.nan,
            "auuc_mean": math.nan,
            "fitted": False,
            "reason": "",
        }
        rec["observed_uplift"] = rec["treated_rate"] - rec["control_rate"]
        reason = None
        if n_t < cfg.min_treated or n_c < cfg.min_control:
            reason = (
                f"{n_t} treated / {n_c} control rows, below the minimum "
                f"{cfg.min_treated} / {cfg.min_control}"
            )
        elif y.min() == y.max():
            reason = f"outcome {OUTCOME} is constant ({y[0]}) over the arm's rows"
        if reason is not None:
            skipped[arm] = reason
            rec["reason"] = f"skipped: {reason}"
            log.info("offer uplift arm %s skipped: %s", arm, reason)
            rows_out.append(rec)
            continue
        x = rows[cols].reset_index(drop=True)
        scores = []
        for k in range(cfg.n_splits):
            half = _halves(t, y, cfg.seed + k)
            model = _fit(x[half], t[half], y[half], cfg.params)
            test = ~half
            try:
                scores.append(uplift_report(y[test], model.predict_uplift(x[test]), t[test]))
            except (ValueError, ZeroDivisionError) as exc:  # a half without responders
                log.info("offer uplift arm %s split %d not scored: %s", arm, k, exc)
        qini = np.array([s["qini"] for s in scores], float)
        auuc = np.array([s["auuc"] for s in scores], float)
        models[arm] = _fit(x, t, y, cfg.params)
        rec.update(
            fitted=True,
            qini_mean=float(np.nanmean(qini)) if np.isfinite(qini).any() else math.nan,
            qini_std=float(np.nanstd(qini, ddof=1)) if np.isfinite(qini).sum() > 1 else math.nan,
            auuc_mean=float(np.nanmean(auuc)) if np.isfinite(auuc).any() else math.nan,
            predicted_uplift=float(models[arm].predict_uplift(x).mean()),
            reason=f"fitted on {n_t} treated / {n_c} control",
        )
        rows_out.append(rec)
    arms_df = pd.DataFrame(rows_out, columns=ARM_COLUMNS)
    fitted = arms_df[arms_df["fitted"] & np.isfinite(arms_df["qini_mean"].astype(float))]
    gate = (
        float(np.average(fitted["qini_mean"], weights=fitted["treated"]))
        if len(fitted)
        else math.nan
    )
    offer = OfferUplift(models, OUTCOME) if models else None
    return BrandUplift(offer, arms_df, gate, skipped)


def register_brand_uplift(
    uplift: BrandUplift,
    table: CampaignTable,
    client: MlflowClient,
    *,
    trained_on: str,
    force: bool = False,
    tags: Mapping[str, str] | None = None,
) -> GateDecision:
    """Log and register ``uplift.offer`` as ``offer_uplift`` in the active run, then the
    champion gate (``offer_qini.converted`` vs random targeting = 0; ``force`` overrides)."""
    if uplift.offer is None:
        raise ValueError("no arm was fitted: nothing to register")
    info = log_offer_uplift(uplift.offer, table.frame, trained_on=trained_on)
    version = str(info.registered_model_version)
    fitted = uplift.arms[uplift.arms["fitted"]]
    version_tags = {
        "trained_on": trained_on,
        "arms": ",".join(uplift.offer.arms),
        "outcome": OUTCOME,
        "rows": str(int(fitted["treated"].sum() + fitted["control"].sum())),
        **{
            metric_tag(f"offer_qini.{r.arm}.{OUTCOME}"): repr(float(r.qini_mean))
            for r in fitted.itertuples()
        },
        **dict(tags or {}),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    return champion_gate(
        client, MODEL_NAME, version, BRAND_GATE_METRIC, uplift.gate_value, {"random": 0.0}, force
    )
