"""What is known of every item at the cutoff, as vectors: the content side of the hybrid.

:func:`item_content` turns each item's description words and its family into TF-IDF
vectors (Salton & Buckley 1988: ``tf · (log((1 + n) / (1 + df)) + 1)``, rows L2-normalised),
so two items that share rare words ("JUMBO BAG", "ROSE", "CHRISTMAS") are close even when
one of them was launched last week and has almost no buyers. An item's family is the
``category`` given with the log, else its id without the variant suffix (85123A → 85123), as
in :mod:`features.snapshot`. Pure numpy/scipy: the served model needs nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

__all__ = ["item_content", "item_family"]

_WORD = re.compile(r"[a-z0-9]{3,}")
_VARIANT = re.compile(r"(?<=\d)[A-Z]+\d?$")


def item_family(item_id: str) -> str:
    """The id without its variant suffix: letters, and an optional digit, after a digit."""
    return _VARIANT.sub("", item_id)


def _tokens(item_id: str, text: str | None, family: str | None) -> list[str]:
    words = _WORD.findall(text.lower()) if text else []
    return [*words, f"family={family if family is not None else item_family(item_id)}"]


def item_content(
    item_ids: np.ndarray,
    text: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
) -> sp.csr_matrix:
    """Item × token TF-IDF matrix (float32, rows L2-normalised) in the order of ``item_ids``.

    ``text``: item id → description (items without one get their family token only);
    ``families``: item id → category, overriding the id-derived family.
    """
    text = text or {}
    families = families or {}
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, item in enumerate(item_ids.tolist()):
        for tok in _tokens(item, text.get(item), families.get(item)):
            rows.append(r)
            cols.append(vocab.setdefault(tok, len(vocab)))
    shape = (len(item_ids), len(vocab))
    tf = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=shape[1])
    idf = np.log((1.0 + shape[0]) / (1.0 + df)) + 1.0
    m = (tf @ sp.diags(idf.astype(np.float32))).tocsr()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ m).astype(np.float32).tocsr()
