"""Point-in-time customer feature snapshot: one row per customer at a cutoff.

``build_features(transactions, cutoff)`` uses only rows strictly before ``cutoff`` — the
same function builds training rows (at past cutoffs) and the serving snapshot (at now),
so there is no training/serving skew. Everything is vectorised over customer codes.

Definitions (days are fractional; ``t`` is the cutoff):

* purchase line: ``quantity > 0``; return line: ``quantity < 0``. An *order* is an
  ``order_id`` with at least one purchase line; its time is its earliest line; a
  *purchase day* is a calendar day with at least one order.
* ``recency_days`` = t − last order; ``tenure_days`` = t − first order.
* ``orders_{w}d`` / ``monetary_{w}d`` for w ∈ {30, 90, 180, 365} and ``_all``: orders and
  gross purchase value in ``[t − w, t)``.
* ``purchase_rate`` / ``monetary_rate``: purchase days / spend per year of tenure (tenure
  floored at 30 days) — comparable between logs of different length, unlike all-time totals.
* inter-order gaps are between consecutive purchase days. ``gap_median``, ``gap_mean``,
  ``gap_cv`` (std/mean) are the customer's own (NaN under two purchase days;
  ``gap_cv`` needs two gaps, so NaN under three).
  ``gap_shrunk`` is an empirical-Bayes geometric mean: the customer's mean log-gap shrunk
  towards the population's with ``GAP_PRIOR_WEIGHT`` pseudo-gaps,
  ``exp((n·mean_log_gap + k·pop_mean_log_gap) / (n + k))`` where ``pop_mean_log_gap`` is
  the mean over customers of their own mean log-gap — a customer with no gap gets the
  typical customer's cycle, one with twenty gaps mostly their own.
* ``recency_ratio`` = recency_days / gap_shrunk: how many of their own cycles they are late.
* ``trend_90d`` = (m₉₀ − m₉₀′)/(m₉₀ + m₉₀′) with m₉₀′ the value in ``[t − 180, t − 90)``:
  −1 stopped, 0 flat, +1 new (0 when both are zero).
* ``return_rate_value`` = returned value / purchased value; ``return_rate_orders`` =
  return orders / orders; ``return_orders``, ``days_since_return``.
* ``basket_value`` (mean order value), ``basket_lines`` (mean lines per order),
  ``distinct_items``, ``top_family_share`` (share of purchase lines in the customer's most
  bought item family — a ``category`` column when given, else the item id without its
  variant suffix: letters, and an optional digit, after a digit, as in 85123A, 15056BL;
  an id without digits is its own family), ``price_index`` (mean of unit price / the
  item's median price before t: below 1 = buys cheap or discounted lines).
* ``orders_same_season_ly``: orders in ``[t − 365, t − 275)`` — the coming 90 days, one
  year earlier (seasonal buyers).
* Season of the prediction window (the same for every customer at a cutoff):
  ``season_sin`` / ``season_cos`` place the middle of the coming 90 days on the year's
  circle (day of year → angle), so a model trained on a year of cutoffs learns which
  windows buy more; ``shop_trend_30d`` is the shop's orders in the last 30 days over a
  third of its last 90 days' (its momentum going into the window); ``shop_season_ly`` is
  the shop's orders in the coming 90 days a year earlier over those in the last 90 days
  (NaN under a year of history) — how much busier the coming window was last year.
* ``usual_hour``: the customer's most frequent ordering hour (for send times).
* Engagement per channel (only when ``events`` are given): sends, opens, clicks in the
  last 90 days and the open rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.cutoff import rows_before

__all__ = [
    "FEATURE_COLUMNS",
    "DEFAULT_GAP_DAYS",
    "GAP_PRIOR_WEIGHT",
    "SEASON_COLUMNS",
    "WINDOWS",
    "ID_COLUMNS",
    "READ_COLUMNS",
    "ShopTotals",
    "build_features",
    "coded_ids",
    "customer_features",
    "customer_partitions",
    "finish_features",
    "id_codes",
    "item_median_prices",
    "model_columns",
]

WINDOWS = (30, 90, 180, 365)
SEASON_COLUMNS = ["season_sin", "season_cos", "shop_trend_30d", "shop_season_ly"]
GAP_PRIOR_WEIGHT = 2.0
DEFAULT_GAP_DAYS = 90.0  # prior cycle when no customer in the snapshot has two purchase days
_DAY = np.timedelta64(1, "D")
#: the id columns a snapshot groups by; :func:`coded_ids` makes them categoricals once
ID_COLUMNS = ("customer_id", "order_id", "item_id")
#: the transaction columns a snapshot reads
READ_COLUMNS = {*ID_COLUMNS, "ts", "quantity", "unit_price", "category"}
#: the text columns :func:`coded_ids` codes: the ids and the few-valued labels
_CODED_COLUMNS = (*ID_COLUMNS, "channel", "country", "category")

FEATURE_COLUMNS = [
    "recency_days",
    "tenure_days",
    *[f"orders_{w}d" for w in WINDOWS],
    "orders_all",
    *[f"monetary_{w}d" for w in WINDOWS],
    "monetary_all",
    "purchase_days",
    "purchase_rate",
    "monetary_rate",
    "gap_median",
    "gap_mean",
    "gap_cv",
    "gap_shrunk",
    "recency_ratio",
    "trend_90d",
    "return_orders",
    "return_rate_value",
    "return_rate_orders",
    "days_since_return",
    "basket_value",
    "basket_lines",
    "distinct_items",
    "top_family_share",
    "price_index",
    "orders_same_season_ly",
    *SEASON_COLUMNS,
    "usual_hour",
]

# usual_hour is for scheduling, not prediction. All-time totals grow with the length of the
# log rather than with the customer (a model trained on cutoffs with one year of history
# sees 18 months at serving time); models get the per-year rates instead.
_NOT_FOR_MODELS = {
    "usual_hour",
    "tenure_days",
    "orders_all",
    "monetary_all",
    "purchase_days",
    "distinct_items",
    "return_orders",
}


def model_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns a model trains on (stable order, engagement columns included)."""
    cols = [c for c in FEATURE_COLUMNS if c not in _NOT_FOR_MODELS]
    cols += [c for c in frame.columns if c.startswith("eng_")]
    return cols


def _days(delta: np.ndarray) -> np.ndarray:
    return delta / _DAY


def build_features(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp,
    events: pd.DataFrame | None = None,
    partitions: int = 1,
) -> pd.DataFrame:
    """Feature snapshot at ``cutoff`` for every customer with an order before it.

    ``transactions`` follows the transactions contract (see :mod:`features.contracts`).
    Returns a frame indexed by ``customer_id`` (sorted) with :data:`FEATURE_COLUMNS`.

    Built per customer partition (:func:`customer_partitions`): a customer's features read
    only their own rows and two shop-level aggregates — the items' median prices before the
    cutoff, computed once up front (a median does not add up over partitions), and the
    population's cycle and the season, reduced once at the end from the partitions' own
    columns (:func:`finish_features`). Any number of ``partitions`` gives the same frame.
    """
    t = cutoff.to_datetime64().astype("datetime64[ns]")
    read = [c for c in transactions.columns if c in READ_COLUMNS]
    tx = rows_before(transactions[read], t)  # of a log in time order, a slice: no copy
    is_buy = tx["quantity"].to_numpy() > 0
    if not is_buy.any():
        return pd.DataFrame(columns=FEATURE_COLUMNS, index=pd.Index([], name="customer_id"))
    # the purchase lines of the two columns a median reads, not a copy of every column
    prices = item_median_prices(tx.loc[is_buy, [c for c in ("item_id", "unit_price") if c in read]])
    parts = [
        customer_features(part, cutoff, prices, events)
        for part in customer_partitions(tx, partitions)
    ]
    return finish_features(pd.concat([p for p in parts if len(p)]), cutoff)


def coded_ids(transactions: pd.DataFrame) -> pd.DataFrame:
    """``transactions`` with its id and label columns as categoricals (the same values,
    integer-coded).

    A snapshot groups and joins by id; on codes that is integer work instead of hashing
    every line's strings again, and a line's ids and labels take a few bytes instead of a
    string each. :func:`build_features` takes either; a training run codes its log once
    after loading (:func:`training.pipeline.train`)."""
    text = [c for c in _CODED_COLUMNS if c in transactions.columns]
    return transactions.astype({c: "category" for c in text})


def id_codes(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """An id column's integer codes (-1: missing) and the ids they stand for: a
    categorical's own, else factorised here."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.cat.codes.to_numpy(), ids.cat.categories
    codes, uniques = pd.factorize(ids)
    return codes, pd.Index(uniques)


def customer_partitions(transactions: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """The rows split into ``n`` partitions by a stable hash of the customer id (all of a
    customer's rows in one partition)."""
    if n < 1:
        raise ValueError(f"partitions must be at least 1, got {n!r}")
    if n == 1:
        return [transactions]
    hashed = pd.util.hash_pandas_object(transactions["customer_id"], index=False).to_numpy()
    part = hashed % np.uint64(n)
    return [transactions[part == k] for k in range(n)]


def item_median_prices(buy: pd.DataFrame) -> pd.Series | None:
    """Each item's median unit price over the purchase lines given (the shop before the
    cutoff); None for a log without items."""
    if not ("item_id" in buy.columns and buy["item_id"].notna().any()):
        return None
    code, items = id_codes(buy["item_id"])
    has = code >= 0
    median = pd.Series(buy["unit_price"].to_numpy()[has]).groupby(code[has]).median()
    index = pd.Index(items[median.index.to_numpy()], name="item_id").astype("str")
    return pd.Series(median.to_numpy(), index=index, name="unit_price").sort_index()


def customer_features(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp,
    prices: pd.Series | None,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The features of the customers in ``transactions`` that need nothing but their own
    rows and the items' median ``prices``; the population cycle and the season are left to
    :func:`finish_features` (a private ``_sum_log_gap`` column carries what it needs)."""
    t = cutoff.to_datetime64().astype("datetime64[ns]")
    tx = rows_before(transactions, t)
    is_buy = tx["quantity"].to_numpy() > 0
    if not is_buy.any():
        return pd.DataFrame(index=pd.Index([], name="customer_id"))
    customer, customer_ids = id_codes(tx["customer_id"])
    order, _ = id_codes(tx["order_id"])
    # the purchase lines are read column by column where needed (``is_buy``), never copied
    # as a frame: a 10-million-line log's copy would outlive every step below
    o = _orders(tx, is_buy, customer, order, customer_ids, t)
    f = pd.DataFrame(index=o.customers)
    _add_windows(f, o)
    _add_cycle(f, o)
    is_return = tx["quantity"].to_numpy() < 0
    _add_returns(f, tx[is_return], o.position[customer[is_return]], order[is_return], o, t)
    f["basket_value"] = f["monetary_all"] / f["orders_all"]
    f["basket_lines"] = o.per_customer(o.n_lines.astype(float)) / f["orders_all"]
    _add_items(f, tx, is_buy, o, prices)
    f["orders_same_season_ly"] = o.per_customer(((o.age > 275) & (o.age <= 365)).astype(float))
    f["usual_hour"] = _usual_hour(o)
    if events is not None and len(events):
        f = f.join(_engagement(events, t, o.customers))
    return f


@dataclass(frozen=True)
class ShopTotals:
    """The shop-level sums :func:`finish_features` reduces over every customer's partial
    features: the population's cycle (the sum of the customers' own mean log-gaps, over the
    customers with a gap) and the season's order counts. They add up over customer
    partitions (``+``), so a partitioned build reduces them from each part's own."""

    cycle_sum: float = 0.0
    cycle_customers: int = 0
    orders_90d: float = 0.0
    orders_30d: float = 0.0
    orders_year_ago: float = 0.0
    max_tenure_days: float = -np.inf

    @classmethod
    def of(cls, f: pd.DataFrame) -> ShopTotals:
        """The totals of one part's partial features (:func:`customer_features`)."""
        if not len(f):
            return cls()
        n_gaps = f["purchase_days"].to_numpy() - 1.0
        has_gap = n_gaps > 0
        return cls(
            float((f["_sum_log_gap"].to_numpy()[has_gap] / n_gaps[has_gap]).sum()),
            int(has_gap.sum()),
            float(f["orders_90d"].sum()),
            float(f["orders_30d"].sum()),
            float(f["orders_same_season_ly"].sum()),
            float(f["tenure_days"].max()),
        )

    def __add__(self, other: ShopTotals) -> ShopTotals:
        return ShopTotals(
            self.cycle_sum + other.cycle_sum,
            self.cycle_customers + other.cycle_customers,
            self.orders_90d + other.orders_90d,
            self.orders_30d + other.orders_30d,
            self.orders_year_ago + other.orders_year_ago,
            max(self.max_tenure_days, other.max_tenure_days),
        )


def finish_features(
    f: pd.DataFrame, cutoff: pd.Timestamp, totals: ShopTotals | None = None
) -> pd.DataFrame:
    """The shop-level reductions over every customer's partial features: the shrunk gap
    (towards the population's typical cycle), recency in cycles, the season; then the
    columns in :data:`FEATURE_COLUMNS` order (engagement columns after them). ``totals``:
    the whole shop's (:class:`ShopTotals`) when ``f`` is one part of it; default ``f``'s."""
    f = f.sort_index()  # sums in customer order: any partitioning gives the same frame
    totals = ShopTotals.of(f) if totals is None else totals
    sum_log = f.pop("_sum_log_gap").to_numpy()
    n_gaps = f["purchase_days"].to_numpy() - 1.0
    # the prior is the typical *customer's* cycle (each customer with a gap counts once),
    # not the typical gap, which frequent buyers dominate
    pop_mean_log = (
        totals.cycle_sum / totals.cycle_customers
        if totals.cycle_customers
        else np.log(DEFAULT_GAP_DAYS)
    )
    k = GAP_PRIOR_WEIGHT
    f["gap_shrunk"] = np.exp((sum_log + k * pop_mean_log) / (n_gaps + k))
    f["recency_ratio"] = f["recency_days"] / f["gap_shrunk"]
    _add_season(f, cutoff, totals)
    out = f[FEATURE_COLUMNS].astype("float64")
    for col in (c for c in f.columns if c.startswith("eng_")):
        out[col] = f[col]
    return out


@dataclass
class _Orders:
    """The orders before the cutoff as arrays, each order tagged with its customer's code."""

    customers: pd.Index  # sorted customer ids; a code is a position in it
    position: np.ndarray  # a customer id code's position in customers (-1: no order)
    line: np.ndarray  # each purchase line's customer position
    code: np.ndarray
    ts: np.ndarray  # the order's earliest line
    value: np.ndarray  # gross purchase value
    n_lines: np.ndarray
    age: np.ndarray  # days before the cutoff, > 0

    @property
    def n(self) -> int:
        return len(self.customers)

    def per_customer(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.code, weights=weights, minlength=self.n)


def _orders(
    tx: pd.DataFrame,
    is_buy: np.ndarray,
    customer: np.ndarray,
    order: np.ndarray,
    customer_ids: pd.Index,
    t: np.datetime64,
) -> _Orders:
    """The purchase lines (``is_buy``) of ``tx`` grouped into orders; ``customer`` and
    ``order`` are the lines' id codes, ``customer_ids`` the ids the customer codes stand for."""
    customer, order = customer[is_buy], order[is_buy]
    # each line's (customer, order) as one integer: factorised (in order of first line, as
    # a sort=False grouping would) without the per-column codes a two-key grouping builds
    n_order = int(order.max()) + 1 if len(order) else 1
    code, key = pd.factorize(_pair(customer, order, n_order))
    n = len(key)
    ts = tx["ts"].to_numpy()[is_buy].view(np.int64)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, code, ts)
    o_ts = first.view("datetime64[ns]")
    o_customer = key // n_order
    used = np.unique(o_customer)
    ids = customer_ids[used]
    by_id = ids.argsort()
    customers = pd.Index(ids[by_id], name="customer_id").astype("str")
    position = np.full(len(customer_ids), -1)
    position[used[by_id]] = np.arange(len(used))
    value = (tx["quantity"].to_numpy() * tx["unit_price"].to_numpy())[is_buy]
    return _Orders(
        customers=customers,
        position=position,
        line=position[customer],
        code=position[o_customer],
        ts=o_ts,
        # values summed in row order (np.bincount): a customer's orders are worth the same
        # to the cent whether built with the whole log or with their partition
        value=np.bincount(code, weights=value, minlength=n),
        n_lines=np.bincount(code, minlength=n),
        age=_days(t - o_ts),
    )


def _add_windows(f: pd.DataFrame, o: _Orders) -> None:
    """Recency, tenure, and orders / spend per window and all-time."""
    last = np.full(o.n, np.inf)
    np.minimum.at(last, o.code, o.age)
    first = np.full(o.n, -np.inf)
    np.maximum.at(first, o.code, o.age)
    f["recency_days"] = last
    f["tenure_days"] = first
    for w in WINDOWS:
        m = o.age <= w
        f[f"orders_{w}d"] = o.per_customer(m.astype(float))
    f["orders_all"] = o.per_customer(np.ones_like(o.age))
    for w in WINDOWS:
        f[f"monetary_{w}d"] = o.per_customer(np.where(o.age <= w, o.value, 0.0))
    f["monetary_all"] = o.per_customer(o.value)


def _add_cycle(f: pd.DataFrame, o: _Orders) -> None:
    """Purchase days, rates per year of tenure, the customer's own inter-purchase gaps (and
    the sum of their logs, for the shrunk gap), trend."""
    n = o.n
    day = pd.DataFrame({"c": o.code, "d": o.ts.astype("datetime64[D]")}).drop_duplicates()
    day = day.sort_values(["c", "d"], kind="stable")
    dc = day["c"].to_numpy()
    dd = day["d"].to_numpy()
    same = np.concatenate([[False], dc[1:] == dc[:-1]])
    gaps = np.where(same, _days(np.diff(dd, prepend=dd[:1])), np.nan)
    g = pd.DataFrame({"c": dc[same], "gap": gaps[same]})
    f["purchase_days"] = np.bincount(dc, minlength=n).astype(float)
    years = np.maximum(f["tenure_days"].to_numpy(), 30.0) / 365.0
    f["purchase_rate"] = f["purchase_days"].to_numpy() / years
    f["monetary_rate"] = f["monetary_all"].to_numpy() / years
    grp = g.groupby("c")["gap"]
    n_gaps = np.bincount(g["c"].to_numpy(), minlength=n).astype(float)
    f["gap_median"] = grp.median().reindex(range(n)).to_numpy()
    gap_mean = grp.mean().reindex(range(n)).to_numpy()
    gap_std = grp.std(ddof=0).reindex(range(n)).to_numpy()
    f["gap_mean"] = gap_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        f["gap_cv"] = np.where(n_gaps >= 2, gap_std / gap_mean, np.nan)
    log_gap = np.log(g["gap"].to_numpy())
    # the shrunk gap needs the population's cycle: finish_features reduces it from this
    f["_sum_log_gap"] = np.bincount(g["c"].to_numpy(), weights=log_gap, minlength=n)
    m_prev = o.per_customer(np.where((o.age > 90) & (o.age <= 180), o.value, 0.0))
    m_recent = f["monetary_90d"].to_numpy()
    denom = m_recent + m_prev
    with np.errstate(invalid="ignore", divide="ignore"):
        f["trend_90d"] = np.where(denom > 0, (m_recent - m_prev) / denom, 0.0)


def _add_returns(
    f: pd.DataFrame,
    ret: pd.DataFrame,
    rc: np.ndarray,
    order: np.ndarray,
    o: _Orders,
    t: np.datetime64,
) -> None:
    """Return orders, returned share of value and of orders, days since the last return;
    ``ret`` are the return lines, ``rc`` their customers' positions (-1: a customer without
    an order), ``order`` their order id codes."""
    n = o.n
    ok = rc >= 0
    rc = rc[ok]
    r_val = np.abs(ret["quantity"].to_numpy() * ret["unit_price"].to_numpy())[ok]
    r_age = _days(t - ret["ts"].to_numpy()[ok])
    ret_orders = pd.DataFrame({"c": rc, "o": order[ok]}).drop_duplicates()["c"].to_numpy()
    f["return_orders"] = np.bincount(ret_orders, minlength=n).astype(float)
    returned_value = np.bincount(rc, weights=r_val, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["return_rate_value"] = np.where(
            f["monetary_all"] > 0, returned_value / f["monetary_all"].to_numpy(), 0.0
        )
    f["return_rate_orders"] = f["return_orders"] / f["orders_all"]
    since_ret = np.full(n, np.inf)
    np.minimum.at(since_ret, rc, r_age)
    f["days_since_return"] = np.where(np.isfinite(since_ret), since_ret, np.nan)


def _add_items(
    f: pd.DataFrame,
    tx: pd.DataFrame,
    is_buy: np.ndarray,
    o: _Orders,
    prices: pd.Series | None,
) -> None:
    """Distinct items, top product family share, price index against the shop's median
    ``prices`` over the purchase lines (``is_buy``) of ``tx`` (NaN when lines have no item)."""
    has_items = prices is not None and "item_id" in tx.columns
    # -1: a line without an item
    item_code, item_ids = id_codes(tx["item_id"][is_buy]) if has_items else (None, None)
    if item_code is None or item_ids is None or not (item_code >= 0).any():
        f["distinct_items"] = np.nan
        f["top_family_share"] = np.nan
        f["price_index"] = np.nan
        return
    # each step's per-line arrays are freed when it returns, before the next builds its own
    family = tx["category"][is_buy] if "category" in tx.columns else None
    _add_item_mix(f, family, o, item_code, item_ids)
    _add_price_index(f, tx["unit_price"].to_numpy()[is_buy], o, item_code, item_ids, prices)


def _add_item_mix(
    f: pd.DataFrame,
    category: pd.Series | None,
    o: _Orders,
    item_code: np.ndarray,
    item_ids: pd.Index,
) -> None:
    """Distinct items and the share of purchase lines in the customer's top family: (customer,
    item) and (customer, family) pairs as one integer each, distinct pairs and lines per
    pair from sorted integers, not by grouping a frame of two columns."""
    n, has_item = o.n, item_code >= 0
    pairs, _ = _distinct(_pair(o.line[has_item], item_code[has_item], len(item_ids)))
    f["distinct_items"] = np.bincount(pairs // len(item_ids), minlength=n).astype(float)
    del pairs, has_item
    fam = _family_codes(category, item_code, item_ids)
    has_fam = fam >= 0
    n_fam = int(fam.max()) + 1 if has_fam.any() else 1
    fam_pairs, lines_per_pair = _distinct(_pair(o.line[has_fam], fam[has_fam], n_fam))
    top = np.zeros(n)
    np.maximum.at(top, fam_pairs // n_fam, lines_per_pair)
    tot = np.bincount(fam_pairs // n_fam, weights=lines_per_pair, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["top_family_share"] = top / tot  # 0 / 0: no line with a family


def _add_price_index(
    f: pd.DataFrame,
    price: np.ndarray,
    o: _Orders,
    item_code: np.ndarray,
    item_ids: pd.Index,
    prices: pd.Series,
) -> None:
    """The mean of each purchase line's ``price`` over its item's median in ``prices``,
    summed in row order per customer (np.bincount), so a partition's customers get the very
    same value as in the whole log."""
    # the median of each line's item (NaN for an unknown item; code -1 picks the NaN at the end)
    medians = np.append(prices.reindex(item_ids.astype("str")).to_numpy(), np.nan)
    item_median = medians[item_code]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(item_median > 0, price / item_median, np.nan)
    del item_median
    priced = ~np.isnan(rel)
    customer = o.line[priced]
    total = np.bincount(customer, weights=rel[priced], minlength=o.n)
    lines = np.bincount(customer, minlength=o.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["price_index"] = np.where(lines > 0, total / lines, np.nan)


def _pair(a: np.ndarray, b: np.ndarray, n_b: int) -> np.ndarray:
    """Pairs of non-negative codes as one int64 (``a · n_b + b``; ``a = pair // n_b``)."""
    return a.astype(np.int64) * n_b + b


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``values`` (sorted) and how often each occurs. Sorting millions of
    int64 costs a third of hashing them (``pd.unique``), and the counts come for free."""
    s = np.sort(values)
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, np.int64)
    return s[start], np.diff(np.r_[start, len(s)])


def _family_codes(
    category: pd.Series | None, item_code: np.ndarray, item_ids: pd.Index
) -> np.ndarray:
    """Each line's product family as an integer code (-1: none): the log's ``category``, else
    the item id without its variant suffix (85123A → 85123), worked out once per distinct
    item rather than per line."""
    if category is not None:
        return pd.factorize(category)[0]
    family = pd.Series(item_ids.astype("str")).str.replace(r"(?<=\d)[A-Z]+\d?$", "", regex=True)
    family_code = pd.factorize(family)[0]
    return np.where(item_code >= 0, family_code[np.maximum(item_code, 0)], -1)


def _add_season(f: pd.DataFrame, cutoff: pd.Timestamp, shop: ShopTotals) -> None:
    """Shop-level season of the coming 90 days (see module docstring): one value per cutoff,
    from the shop's windowed order counts."""
    middle = cutoff + pd.Timedelta(days=45)
    angle = 2.0 * np.pi * (middle.dayofyear - 1) / 365.25
    f["season_sin"] = np.sin(angle)
    f["season_cos"] = np.cos(angle)
    last_90, last_30 = shop.orders_90d, shop.orders_30d
    f["shop_trend_30d"] = 3.0 * last_30 / last_90 if last_90 else np.nan
    covered = shop.max_tenure_days >= 365  # the log reaches a year back
    f["shop_season_ly"] = shop.orders_year_ago / last_90 if covered and last_90 else np.nan


def _usual_hour(o: _Orders) -> np.ndarray:
    """The hour of day of most of the customer's orders (the earliest such hour on a tie)."""
    hours = pd.DataFrame({"c": o.code, "h": pd.DatetimeIndex(o.ts).hour})
    hour_counts = hours.groupby(["c", "h"]).size().reset_index(name="n")
    hour_counts = hour_counts.sort_values(["c", "n", "h"], ascending=[True, False, True])
    usual = hour_counts.drop_duplicates("c").set_index("c")["h"]
    return usual.reindex(range(o.n)).to_numpy().astype(float)


def _engagement(events: pd.DataFrame, t: np.datetime64, customers: pd.Index) -> pd.DataFrame:
    ev = events[(events["ts"].to_numpy() < t) & (events["ts"].to_numpy() >= t - 90 * _DAY)]
    out = pd.DataFrame(index=customers)
    for ch in sorted(ev["channel"].dropna().unique()):
        sub = ev[ev["channel"] == ch]
        counts = sub.groupby(["customer_id", "event"]).size().unstack(fill_value=0)
        for kind in ("sent", "opened", "clicked"):
            col = counts[kind] if kind in counts.columns else pd.Series(0, index=counts.index)
            out[f"eng_{ch}_{kind}"] = col.reindex(customers, fill_value=0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"eng_{ch}_open_rate"] = out[f"eng_{ch}_opened"] / out[f"eng_{ch}_sent"]
    return out
