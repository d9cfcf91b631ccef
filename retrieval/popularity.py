"""Popularity retriever: rank items by how often they occur in the histories visible at that split.

For val the counts come from seq[:-2] of every user, for test from seq[:-1]: exactly the histories
of that split, so no held-out target of the split is ever counted. Ties are broken by item index,
i.e. lexicographic item_id order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.topk import drop_history


def item_counts(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """(N + 1,) float64 occurrence count of each item index over all histories (index 0 stays 0)."""
    flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if histories else np.zeros(0, int)
    counts = np.bincount(flat, minlength=n_items + 1).astype(np.float64)
    counts[0] = 0.0
    return counts


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices 1..N sorted by count descending, then index ascending (deterministic tie-break)."""
    idx = np.arange(1, len(counts))
    return idx[np.lexsort((idx, -counts[1:]))]


def popularity_scores(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """(B, N + 1) dense score matrix (same count row for every user) for full-ranking metrics."""
    counts = item_counts(histories, n_items)
    return np.broadcast_to(counts, (len(histories), n_items + 1))


def popularity_topk(
    histories: Sequence[np.ndarray], n_items: int, k: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k most popular non-history items per user, with counts as scores.

    Args:
        histories: per user, the split's history (also the data the counts are taken from).
        n_items: N.
        k: candidates per user.
    """
    counts = item_counts(histories, n_items)
    order = popularity_order(counts)  # (N,)
    max_hist = max((len(h) for h in histories), default=0)
    top = order[: k + max_hist]  # deep enough for the longest history
    ids = np.broadcast_to(top, (len(histories), len(top)))  # (B, M)
    return drop_history(ids, counts[ids], histories, k)
