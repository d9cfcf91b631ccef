"""Ranking agreement of a quantised model with the full-precision one, per user, from two predictions files.

top-1 agreement: share of users whose highest-scored candidate is the same. Kendall's τ-b of the two score
vectors over the user's candidates (ties handled), averaged over users. ΔNDCG@10 is the difference of the
evaluated metric (evaluation.report), not computed here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b (ties in either vector reduce the denominator); nan when either vector is constant.

    Args:
        x, y: scores of the same candidates, aligned.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau_b needs two equal-length 1-D vectors, got {a.shape} and {b.shape}")
    i, j = np.triu_indices(len(a), k=1)  # all pairs (P,)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n1, n2 = np.count_nonzero(da), np.count_nonzero(db)
    if n1 == 0 or n2 == 0:
        return float("nan")
    return float((da * db).sum() / np.sqrt(n1 * n2))


def agreement(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    """top-1 agreement and mean Kendall τ between two predictions tables (user_id, candidates, scores).

    Users are matched by id; both must list the same candidates in the same (retriever) order.
    """
    ref = reference.set_index("user_id")
    oth = other.set_index("user_id")
    common = [u for u in ref.index if u in oth.index and len(ref.at[u, "scores"]) > 0]
    if not common:
        raise ValueError("no common users with scores between the two predictions")
    top1, taus = [], []
    for u in common:
        if list(ref.at[u, "candidates"]) != list(oth.at[u, "candidates"]):
            raise ValueError(f"user {u}: the two runs scored different candidate lists")
        s_ref, s_oth = np.asarray(ref.at[u, "scores"]), np.asarray(oth.at[u, "scores"])
        top1.append(int(np.argmax(s_ref) == np.argmax(s_oth)))
        tau = kendall_tau_b(s_ref, s_oth)
        if not np.isnan(tau):
            taus.append(tau)
    return {"users": len(common), "top1_agreement": float(np.mean(top1)),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan")}
