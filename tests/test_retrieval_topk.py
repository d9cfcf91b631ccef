"""faiss top-K with history exclusion vs an independent numpy brute force."""
import numpy as np

from retrieval.topk import drop_history, faiss_topk


def brute_force_topk(users, items, histories, k):
    """Independent reference: full score matrix, argsort, skip history (ids are 1-based)."""
    out = []
    for u, hist in zip(users, histories):
        scores = items.astype(np.float64) @ u.astype(np.float64)  # (N,)
        order = np.argsort(-scores, kind="stable") + 1
        out.append([int(i) for i in order if i not in set(hist.tolist())][:k])
    return out


def test_faiss_topk_equals_numpy_brute_force_with_history_excluded():
    rng = np.random.default_rng(0)
    n_items, d, k = 300, 16, 10
    users = rng.normal(size=(40, d)).astype(np.float32)
    items = rng.normal(size=(n_items, d)).astype(np.float32)
    # Histories deliberately contain each user's best items so exclusion matters.
    histories = []
    for u in users:
        best = np.argsort(-(items @ u))[: rng.integers(0, 30)] + 1
        extra = rng.choice(np.arange(1, n_items + 1), size=5, replace=False)
        histories.append(np.unique(np.concatenate([best, extra])).astype(np.int64))
    ids, scores = faiss_topk(users, items, histories, k, threads=1)
    expected = brute_force_topk(users, items, histories, k)
    for row, (got, want, hist) in enumerate(zip(ids, expected, histories)):
        assert got.tolist() == want, f"user {row}"
        assert not set(got.tolist()) & set(hist.tolist())
        np.testing.assert_allclose(scores[row], items[got - 1] @ users[row], rtol=1e-4, atol=1e-4)


def test_faiss_topk_returns_fewer_when_history_covers_almost_everything():
    items = np.eye(4, dtype=np.float32)
    users = np.ones((1, 4), dtype=np.float32)
    ids, _ = faiss_topk(users, items, [np.array([1, 2, 3])], k=3)
    assert ids[0].tolist() == [4]


def test_drop_history_removes_padding_missing_and_history_keeping_order():
    ids = np.array([[0, 5, 3, -1, 2, 7]])
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]])
    got_ids, got_scores = drop_history(ids, scores, [np.array([3])], k=2)
    assert got_ids[0].tolist() == [5, 2]
    assert got_scores[0].tolist() == [8.0, 5.0]
