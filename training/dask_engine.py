"""The boosters of ``python -m training --engine dask``, fitted through LightGBM's own
distributed interface (``lightgbm.dask``, data-parallel tree learner) on a
``dask.distributed`` cluster; the run's snapshots and training frames are built there too
(:class:`features.distributed.ClusterFrames`).

:class:`DaskTrainer` is the :class:`servable.propensity.BoosterTrainer` of the churn and
next-purchase models. A training matrix the workers hold (a Dask array: the rows of a
:class:`features.distributed.ClusterRows` frame) is re-cut there into one row block per
worker; a numpy matrix is split the same way and sent. Every worker builds the LightGBM
dataset of its own rows and the workers merge their histograms over LightGBM's socket
network, so no worker holds more than its share of a booster's training data, and the
driver none of a frame the workers hold. Early stopping keeps the local engine's rule (stop
when the objective's loss on the validation fold has not improved for ``patience`` rounds,
keep the best round): ``lightgbm.dask`` evaluates a validation set on each worker's part
only, so the booster grows in blocks of ``block`` rounds (each block continues the last
one, ``init_model``) and the driver scores the validation fold tree by tree.

Results match the local engine within the distributed learner's own differences (its bin
boundaries come from every worker's sample): ``tests/test_distributed_training.py`` states
the tolerance. Dask is an optional dependency (the ``dask`` extra); only this module and
:mod:`features.distributed` import it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

__all__ = ["DaskTrainer"]

#: the loss each objective early-stops on, from raw scores (LightGBM's default metric)
_LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "binary": lambda y, raw: float(np.mean(np.logaddexp(0.0, raw) - y * raw)),  # log loss
    "regression_l1": lambda y, raw: float(np.mean(np.abs(y - raw))),  # l1
}


def _quiet_lightgbm() -> None:
    """Route LightGBM's messages to the ``lightgbm`` logger at level WARNING: the native
    library's lines (all sent as info) and the driver's port search are hidden; Python-side
    warnings still show."""
    logger = logging.getLogger("lightgbm")
    logger.setLevel(logging.WARNING)
    lgb.register_logger(logger)


@dataclass
class DaskTrainer:
    """Fits boosters with ``lightgbm.dask`` on ``client``'s workers (see module docstring).

    ``block``: rounds per early-stopping step (each step ships only the previous booster).
    """

    client: Any  # a distributed.Client (dask is optional: not imported at module level)
    block: int = 100

    def __post_init__(self) -> None:
        self.client.run(_quiet_lightgbm)  # the workers' socket set-up chatter
        _quiet_lightgbm()  # the driver's ("Finding random open ports for workers")

    def describe(self) -> str:
        """``dask: N workers at ADDRESS`` (logged with the run)."""
        return f"dask: {len(self.client.nthreads())} workers at {self.client.scheduler.address}"

    def early_stopped(
        self,
        params: dict[str, Any],
        train: tuple[Any, Any],
        valid: tuple[np.ndarray, np.ndarray],
        names: list[str],
        max_rounds: int,
        patience: int,
    ) -> lgb.Booster:
        loss = _LOSSES[params["objective"]]
        data = self._persist(*train)
        x_va, y_va = valid
        raw = np.zeros(len(y_va))
        booster, grown, best, best_loss = None, 0, 0, np.inf
        while grown < max_rounds and (booster is None or grown - best < patience):
            step = min(self.block, max_rounds - grown)
            booster = self._fit(params, data, names, step, init=booster)
            for i in range(grown, grown + step):  # the validation loss after each new tree
                raw += booster.predict(x_va, start_iteration=i, num_iteration=1, raw_score=True)
                if (current := loss(y_va, raw)) < best_loss:
                    best, best_loss = i + 1, current
            grown += step
        booster.best_iteration = best
        return booster

    def rounds(
        self, params: dict[str, Any], x: Any, y: Any, names: list[str], rounds: int
    ) -> lgb.Booster:
        return self._fit(params, self._persist(x, y), names, rounds)

    def _persist(self, x: Any, y: Any) -> tuple[Any, Any]:
        """``(x, y)`` as dask arrays of one row block per worker, held by the workers (a
        Dask array's blocks are re-cut: a customer part's rows may be few or none after a
        fold's mask, and ``lightgbm.dask`` fails on a worker without rows)."""
        import dask.array as da

        if isinstance(x, da.Array):
            x, y = self.client.persist([x, y])
            x, y = x.compute_chunk_sizes(), y.compute_chunk_sizes()
        rows = max(1, -(-len(y) // max(1, len(self.client.nthreads()))))
        if isinstance(x, da.Array):
            x, y = x.rechunk((rows, x.shape[1])), y.rechunk(rows)
        else:
            x = da.from_array(np.ascontiguousarray(x), chunks=(rows, x.shape[1]))
            y = da.from_array(np.asarray(y), chunks=rows)
        return tuple(self.client.persist([x, y]))

    def _fit(
        self,
        params: dict[str, Any],
        data: tuple[Any, Any],
        names: list[str],
        rounds: int,
        init: lgb.Booster | None = None,
    ) -> lgb.Booster:
        """``rounds`` more rounds on the persisted ``data`` (after ``init``'s trees)."""
        kind = lgb.DaskLGBMClassifier if params["objective"] == "binary" else lgb.DaskLGBMRegressor
        # lightgbm.dask gives each worker as many threads as it has: no global num_threads
        settings = {k: v for k, v in params.items() if k != "num_threads"}
        model = kind(client=self.client, n_estimators=rounds, **settings)
        model.fit(*data, feature_name=names, init_model=init)
        return model.booster_
