"""Full-ranking metrics from target ranks, checked against hand-worked values."""
import math

import numpy as np
import pytest

from retrieval.ranking_metrics import metrics_from_ranks, target_ranks


def test_metrics_from_ranks_match_hand_formulas():
    ranks = np.array([0, 3, 9, 25])
    m = metrics_from_ranks(ranks, ks=(1, 5, 10))
    assert m["hit@1"] == pytest.approx(1 / 4)
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 4 + 1 / 10) / 4)
    assert m["mrr@1"] == pytest.approx(1 / 4)


def test_target_ranks_exclude_history_padding_and_break_ties_by_index():
    # columns: padding, items 1..5
    scores = np.array([
        [9.0, 5.0, 4.0, 4.0, 3.0, 1.0],  # item 1 scores higher, item 2 ties (lower index wins) -> rank 2
        [9.0, 5.0, 4.0, 4.0, 3.0, 1.0],  # same, but item 2 and 1 are history -> rank 0
        [9.0, 5.0, 4.0, 4.0, 3.0, 1.0],  # target 1 is in the history -> unreachable (rank N = 5)
    ])
    targets = np.array([3, 3, 1])
    histories = [np.array([], dtype=np.int64), np.array([1, 2]), np.array([1])]
    assert target_ranks(scores, targets, histories).tolist() == [2, 0, 5]


def test_metrics_from_ranks_rejects_empty():
    with pytest.raises(ValueError):
        metrics_from_ranks(np.array([]))
