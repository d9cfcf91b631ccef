"""Full-ranking metrics for stage-1 retrieval, computed from the 0-based rank of the single target.

The rank of a user's target is its position among ALL items once that user's history items (and the
padding index) are removed; ties are broken by item index (= item_id order), which is the same
tie-break the candidate lists use, so ``hit@K`` here equals coverage@K of the written top-K lists.

This module works on rank arrays (one number per user); ``evaluation/metrics.py`` works on ranked lists
for the reranker. With one target per user: recall@k = hit@k = [rank < k],
ndcg@k = 1/log2(rank + 2) if rank < k, mrr@k = 1/(rank + 1) if rank < k.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.topk import mask_history

DEFAULT_KS = (1, 5, 10, 20)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean Recall/NDCG/MRR/Hit @k over users.

    Args:
        ranks: (U,) 0-based rank of each user's target; any value >= every k counts as a miss.
        ks: cut-offs.
    Returns:
        {"recall@k", "ndcg@k", "mrr@k", "hit@k" for each k} as Python floats.
    """
    r = np.asarray(ranks, dtype=np.float64)[:, None]  # (U, 1)
    if r.size == 0:
        raise ValueError("metrics_from_ranks needs at least one user")
    k = np.asarray(ks, dtype=np.float64)[None, :]  # (1, K)
    hit = r < k  # (U, K)
    ndcg = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
    mrr = np.where(hit, 1.0 / (r + 1.0), 0.0)
    out: dict[str, float] = {}
    for j, kk in enumerate(ks):
        h = float(hit[:, j].mean())
        out[f"recall@{kk}"] = h
        out[f"ndcg@{kk}"] = float(ndcg[:, j].mean())
        out[f"mrr@{kk}"] = float(mrr[:, j].mean())
        out[f"hit@{kk}"] = h
    return out


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
