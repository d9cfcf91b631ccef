"""SASRec retriever: learns a sequential pattern, is deterministic, never proposes history items."""
import numpy as np
import pandas as pd
import pytest

from config import RetrievalConfig
from retrieval import build_candidates
from retrieval_helpers import make_prepared, ml100k_sequences

N_ITEMS = 40


def successor_sequences(n_users=160, seed=0):
    """Item i is always followed by i+1 (mod N): the next item is fully determined by the last one."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        start, length = rng.integers(0, N_ITEMS), rng.integers(6, 14)
        seqs[f"u{u:03d}"] = [f"i{(start + t) % N_ITEMS:02d}" for t in range(length)]
    return seqs


SMALL = dict(retriever="sasrec", top_k=10, max_len=16, hidden=32, layers=1, heads=1, dropout=0.1, lr=5e-3,
             batch_size=64, epochs=30, eval_every=5, patience=2, seed=7, device="cpu",
             threads=1)  # 1 thread: robust when other test processes share the 2 cores


def random_ndcg10(seqs, split_cut):
    """Expected NDCG@10 of a uniformly random ranking of the non-history items (independent formula)."""
    vals = []
    for seq in seqs.values():
        n = N_ITEMS - len(set(seq[:split_cut]))
        vals.append(sum(1 / np.log2(r + 2) for r in range(min(10, n))) / n)
    return float(np.mean(vals))


def test_sasrec_learns_successor_pattern_and_is_deterministic(tmp_path):
    seqs = successor_sequences()
    metas, frames = [], []
    for run in ("a", "b"):
        prepared = make_prepared(tmp_path / run, seqs)
        metas.append(build_candidates(prepared, RetrievalConfig(**SMALL)))
        frames.append({s: pd.read_parquet(prepared.candidates_path("sasrec", s)) for s in ("val", "test")})
    meta = metas[0]
    assert meta["metrics"]["val"]["ndcg@10"] > 0.8 > 5 * random_ndcg10(seqs, -2)
    assert meta["metrics"]["test"]["ndcg@10"] > 0.8
    assert meta["best_epoch"] >= 1 and meta["epochs"] >= meta["best_epoch"]
    # Independent check of the written lists: the top candidate is the successor of the last history item.
    test = frames[0]["test"].set_index("user_id")
    top1 = [test.loc[u, "candidates"][0] == f"i{(int(s[-2][1:]) + 1) % N_ITEMS:02d}" for u, s in seqs.items()]
    assert np.mean(top1) > 0.9
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(frames[0][split], frames[1][split])
    assert metas[0]["metrics"] == metas[1]["metrics"]


def test_sasrec_candidates_exclude_history_and_are_sorted(tmp_path):
    seqs = successor_sequences(n_users=60, seed=1)
    prepared = make_prepared(tmp_path, seqs)
    build_candidates(prepared, RetrievalConfig(**{**SMALL, "epochs": 4, "eval_every": 2}))
    for split, cut in (("val", -2), ("test", -1)):
        df = pd.read_parquet(prepared.candidates_path("sasrec", split))
        assert sorted(df["user_id"]) == sorted(seqs)
        for uid, cands, scores in zip(df["user_id"], df["candidates"], df["scores"]):
            assert len(cands) == 10 and len(set(cands)) == 10
            assert not set(cands) & set(seqs[uid][:cut]), (split, uid)
            assert np.all(np.diff(scores) <= 1e-6)


@pytest.mark.slow
def test_sasrec_on_ml100k_beats_popularity(tmp_path, ml100k_dir):
    seqs = ml100k_sequences(ml100k_dir)
    assert (len(seqs), len({i for s in seqs.values() for i in s})) == (943, 1349)
    prepared = make_prepared(tmp_path, seqs, name="ml-100k")
    pop = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=20))
    # A shortened schedule keeps the test short; the full default run is measured separately.
    sas = build_candidates(prepared, RetrievalConfig(retriever="sasrec", top_k=20, epochs=12, eval_every=4, threads=1))
    assert sas["metrics"]["test"]["ndcg@10"] > max(0.05, pop["metrics"]["test"]["ndcg@10"])
    assert sas["coverage"]["test"]["coverage@20"] > pop["coverage"]["test"]["coverage@20"]
    df = pd.read_parquet(prepared.candidates_path("sasrec", "test"))
    hits = [seqs[u][-1] in set(c) for u, c in zip(df["user_id"], df["candidates"])]
    assert np.mean(hits) == pytest.approx(sas["coverage"]["test"]["coverage@20"])
    assert all(not set(c) & set(seqs[u][:-1]) for u, c in zip(df["user_id"], df["candidates"]))
