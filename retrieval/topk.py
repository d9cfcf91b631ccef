"""Top-K candidate search with history exclusion.

``faiss_topk`` runs an exact inner-product search (faiss.IndexFlatIP) of user vectors against item
vectors; ``drop_history`` is the single place where a user's history items (and padding) are removed
from a searched list, used by every retriever. ``mask_history`` does the same exclusion on dense score
matrices for full-ranking metrics.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import faiss
import numpy as np

from retrieval.data import PAD

log = logging.getLogger(__name__)


def mask_history(scores: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
    """Set padding (column 0) and each row's history items to -inf, in place.

    Args:
        scores: (B, N + 1) float scores indexed by item index.
        histories: B arrays of item indices.
    """
    scores[:, PAD] = -np.inf
    for row, hist in enumerate(histories):
        scores[row, hist] = -np.inf
    return scores


def drop_history(
    ids: np.ndarray, scores: np.ndarray, histories: Sequence[np.ndarray], k: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Remove history items, padding (0) and missing hits (-1) from searched lists; keep the first k.

    Args:
        ids: (B, M) item indices per user, best first (M should be >= k + len(history)).
        scores: (B, M) scores aligned with ``ids``.
        histories: B arrays of item indices to exclude.
        k: list length to keep.
    Returns:
        (ids, scores): two lists of B arrays of length <= k (shorter only when fewer than k
        non-history items exist in the searched lists).
    """
    if ids.shape != scores.shape or len(ids) != len(histories):
        raise ValueError(f"shape mismatch: ids {ids.shape}, scores {scores.shape}, {len(histories)} histories")
    out_ids, out_scores = [], []
    for row, hist in enumerate(histories):
        keep = (ids[row] > PAD) & ~np.isin(ids[row], hist)  # (M,)
        out_ids.append(ids[row][keep][:k].astype(np.int64))
        out_scores.append(scores[row][keep][:k].astype(np.float32))
    return out_ids, out_scores


def faiss_topk(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    histories: Sequence[np.ndarray],
    k: int,
    threads: Optional[int] = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact inner-product top-k over items 1..N, with each user's history excluded.

    Args:
        user_vecs: (B, d) user representations.
        item_vecs: (N, d) vectors of items 1..N (row j is item index j + 1; padding is not indexed).
        histories: B arrays of item indices to exclude.
        k: candidates per user.
        threads: faiss OpenMP threads (None leaves faiss' default).
    Returns:
        (ids, scores) as in ``drop_history``; ids are item indices in 1..N.
    """
    user_vecs = np.ascontiguousarray(user_vecs, dtype=np.float32)  # (B, d)
    item_vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)  # (N, d)
    if user_vecs.ndim != 2 or item_vecs.ndim != 2 or user_vecs.shape[1] != item_vecs.shape[1]:
        raise ValueError(f"need (B, d) and (N, d) arrays, got {user_vecs.shape} and {item_vecs.shape}")
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    n_items = len(item_vecs)
    # Search deep enough that k items survive even for the user with the longest history.
    max_hist = max((len(h) for h in histories), default=0)
    m = min(n_items, k + max_hist)
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(item_vecs)
    dist, found = index.search(user_vecs, m)  # (B, m), (B, m); found is 0-based, -1 when missing
    found = np.where(found >= 0, found + 1, PAD)  # shift to item indices 1..N
    return drop_history(found, dist, histories, k)
