"""Top-K ranking metrics for one held-out target per user (leave-one-out), one implementation each.

A user's result is the 0-based rank of the target in the ranked list, or ``None`` when the target is not in
the list (a miss at every K). With a single relevant item, Recall@K equals Hit@K; NDCG@K = 1/log2(rank+2);
MRR@K = 1/(rank+1) — the definitions LlamaRec's table uses.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)

# name -> f(rank) for a hit within K (a miss scores 0)
METRICS: dict[str, Callable[[int], float]] = {
    "recall": lambda r: 1.0,
    "hit": lambda r: 1.0,
    "ndcg": lambda r: 1.0 / math.log2(r + 2),
    "mrr": lambda r: 1.0 / (r + 1),
}


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


def compute_metrics(ranks: Iterable[Optional[int]], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean of each metric@K over users; ``None`` ranks count as misses."""
    ranks = list(ranks)
    if not ranks:
        raise ValueError("no users to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        for name, f in METRICS.items():
            out[f"{name}@{k}"] = sum(f(r) for r in ranks if r is not None and r < k) / len(ranks)
    return out
