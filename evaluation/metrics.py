"""Top-K ranking metrics for one held-out target per user (leave-one-out), one implementation each.

A user's result is the 0-based rank of the target in the ranked list, or ``None`` when the target is not in
the list (a miss at every K). With a single relevant item, Recall@K equals Hit@K; NDCG@K = 1/log2(rank+2);
MRR@K = 1/(rank+1) — the definitions LlamaRec's table uses.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)

def target_rank(ranked: Sequence[str], target: str) -> Optional[int]:
    """0-based position of ``target`` in ``ranked``, None if absent."""
    for i, item in enumerate(ranked):
        if item == target:
            return i
    return None


def rank_by_scores(candidates: Sequence[str], scores: Sequence[float]) -> list[str]:
    """Candidates sorted by descending score; ties keep the retriever order (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [candidates[i] for i in order]


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean Recall/NDCG/MRR/Hit @k over users, vectorised.

    Args:
        ranks: (U,) 0-based rank of each user's target; any value >= every k (e.g. inf) is a miss.
        ks: cut-offs.
    """
    r = np.asarray(ranks, dtype=np.float64)[:, None]  # (U, 1)
    if r.size == 0:
        raise ValueError("no users to evaluate")
    k = np.asarray(ks, dtype=np.float64)[None, :]  # (1, K)
    hit = r < k  # (U, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndcg = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
        mrr = np.where(hit, 1.0 / (r + 1.0), 0.0)
    out: dict[str, float] = {}
    for j, kk in enumerate(ks):
        h = float(hit[:, j].mean())
        out[f"recall@{kk}"] = h  # one relevant item: recall@k == hit@k
        out[f"ndcg@{kk}"] = float(ndcg[:, j].mean())
        out[f"mrr@{kk}"] = float(mrr[:, j].mean())
        out[f"hit@{kk}"] = h
    return out


def compute_metrics(ranks: Iterable[Optional[int]], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean of each metric@K over users; ``None`` ranks count as misses."""
    return metrics_from_ranks([math.inf if r is None else r for r in ranks], ks)
