"""Metrics against hand-worked values (formulas written out, as in RecBole's metric tests)."""
import math

import pandas as pd
import pytest

from evaluation.metrics import compute_metrics, rank_by_scores, target_rank
from evaluation.report import evaluate_predictions


def test_metrics_hand_worked_three_users():
    # ranks: 0 (first), 3 (fourth), miss
    m = compute_metrics([0, 3, None], ks=(1, 5))
    assert m["hit@1"] == pytest.approx(1 / 3)
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 4) / 3)
    assert m["mrr@1"] == pytest.approx(1 / 3)


def test_rank_at_k_boundary_is_a_miss():
    m = compute_metrics([5], ks=(5, 10))
    assert m["hit@5"] == 0 and m["ndcg@5"] == 0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(7))


def test_rank_by_scores_ties_keep_retriever_order():
    assert rank_by_scores(["a", "b", "c", "d"], [1.0, 3.0, 1.0, 3.0]) == ["b", "d", "a", "c"]
    assert target_rank(["x", "y"], "z") is None


def test_overall_counts_missing_targets_subset_excludes_them():
    pred = pd.DataFrame({
        "user_id": ["u1", "u2", "u3"],
        "target": ["a", "e", "z"],
        "candidates": [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]],
        # u1: reranker moves a from 1st to 2nd; u2: reranker moves e from 2nd to 1st; u3: target absent
        "scores": [[0.5, 0.9, 0.1], [0.1, 0.9, 0.2], [1.0, 2.0, 3.0]],
    })
    m = evaluate_predictions(pred, ks=(1, 5))
    assert m["n_users"] == 3 and m["n_subset"] == 2
    assert m["reranker"]["overall"]["hit@1"] == pytest.approx(1 / 3)
    assert m["reranker"]["subset"]["hit@1"] == pytest.approx(1 / 2)
    assert m["reranker"]["overall"]["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert m["retriever"]["overall"]["mrr@5"] == pytest.approx((1 + 1 / 2) / 3)
    assert m["retriever"]["subset"]["mrr@5"] == pytest.approx((1 + 1 / 2) / 2)


def test_user_without_candidates_is_a_miss():
    pred = pd.DataFrame({"user_id": ["u1", "u2"], "target": ["a", "b"],
                         "candidates": [["a"], []], "scores": [[1.0], []]})
    m = evaluate_predictions(pred, ks=(1,))
    assert m["reranker"]["overall"]["hit@1"] == 0.5 and m["n_subset"] == 1
