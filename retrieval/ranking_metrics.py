"""Full-ranking metrics for stage-1 retrieval, computed from the 0-based rank of the single target.

The rank of a user's target is its position among ALL items once that user's history items (and the
padding index) are removed; ties are broken by item index (= item_id order), which is the same
tie-break the candidate lists use, so ``hit@K`` here equals coverage@K of the written top-K lists.

The metric formulas themselves live once, in ``evaluation.metrics.metrics_from_ranks``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# one implementation of the metric formulas, shared with the reranker's evaluation
from evaluation.metrics import DEFAULT_KS, metrics_from_ranks  # noqa: F401
from retrieval.topk import mask_history


def target_ranks(scores: np.ndarray, targets: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
    """0-based rank of each target among all non-history items.

    Args:
        scores: (B, N + 1) score of every item index for each user; column 0 is padding.
        targets: (B,) target item index per user.
        histories: per user, the item indices to exclude.
    Returns:
        (B,) int64 ranks. A target that is itself in the history (repeat consumption) can never be
        retrieved and gets rank N (a miss at every cut-off).
    """
    s = np.array(scores, dtype=np.float64, copy=True)  # (B, N + 1); float64 so ties are exact
    n_items = s.shape[1] - 1
    b = np.arange(len(s))
    unreachable = np.array([t in set(h.tolist()) for t, h in zip(targets.tolist(), histories)], dtype=bool)
    mask_history(s, histories)
    t_score = s[b, targets][:, None]  # (B, 1)
    idx = np.arange(s.shape[1])[None, :]  # (1, N + 1)
    better = (s > t_score) | ((s == t_score) & (idx < targets[:, None]))  # (B, N + 1)
    ranks = better.sum(axis=1).astype(np.int64)
    ranks[unreachable] = n_items
    return ranks
