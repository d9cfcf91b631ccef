"""Popularity retriever end to end through build_candidates, against hand-computed lists."""
import json
import logging
import math

import pandas as pd
import pytest

from config import RetrievalConfig
from retrieval import build_candidates
from retrieval_helpers import make_prepared

HAND = {
    "u1": ["a", "b", "c", "d"],
    "u2": ["b", "c", "a"],
    "u3": ["c", "e", "b", "a"],
    "u4": ["d", "e", "f"],
}


def read(prepared, split):
    df = pd.read_parquet(prepared.candidates_path("popularity", split))
    return {u: (list(c), list(s)) for u, c, s in zip(df["user_id"], df["candidates"], df["scores"])}


def test_popularity_candidates_equal_hand_computed_lists(tmp_path):
    prepared = make_prepared(tmp_path, HAND)
    build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    # val counts over seq[:-2]: b=2, a=c=d=e=1, f=0 -> order b, a, c, d, e, f (ties by item id)
    assert read(prepared, "val") == {
        "u1": (["c", "d", "e"], [1.0, 1.0, 1.0]),
        "u2": (["a", "c", "d"], [1.0, 1.0, 1.0]),
        "u3": (["b", "a", "d"], [2.0, 1.0, 1.0]),
        "u4": (["b", "a", "c"], [2.0, 1.0, 1.0]),
    }
    # test counts over seq[:-1]: b=c=3, e=2, a=d=1, f=0 -> order b, c, e, a, d, f
    assert read(prepared, "test") == {
        "u1": (["e", "d", "f"], [2.0, 1.0, 0.0]),
        "u2": (["e", "a", "d"], [2.0, 1.0, 1.0]),
        "u3": (["a", "d", "f"], [1.0, 1.0, 0.0]),
        "u4": (["b", "c", "a"], [3.0, 3.0, 1.0]),
    }


def test_popularity_metrics_and_coverage_match_hand_ranks(tmp_path):
    prepared = make_prepared(tmp_path, HAND)
    meta = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    # val target ranks among non-history items: u1 c->0, u2 c->1, u3 b->0, u4 e->3
    val = meta["metrics"]["val"]
    assert val["hit@1"] == pytest.approx(2 / 4)
    assert val["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 + 1 / math.log2(5)) / 4)
    assert val["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 + 1 / 4) / 4)
    assert meta["coverage"]["val"]["coverage@3"] == pytest.approx(3 / 4)
    # test targets: u1 d (in list, pos 1), u2 a (pos 1), u3 a (pos 0), u4 f (not in top-3)
    assert meta["coverage"]["test"]["coverage@3"] == pytest.approx(3 / 4)
    assert meta["dataset_hash"] == prepared.content_hash
    on_disk = json.loads((prepared.candidates_path("popularity", "val").parent / "retrieval.json").read_text())
    assert on_disk["metrics"] == meta["metrics"]


def test_popularity_never_counts_held_out_targets(tmp_path):
    # Every user's val target is "y" and test target is "z": a leak would make them the most popular.
    seqs = {f"u{i}": [f"h{i % 3}", f"h{(i + 1) % 3}", "y", "z"] for i in range(6)}
    prepared = make_prepared(tmp_path, seqs)
    build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=5))
    for user, (cands, scores) in read(prepared, "val").items():
        got = dict(zip(cands, scores))
        assert got["y"] == 0.0 and got["z"] == 0.0, user  # val counts see only seq[:-2]
    for user, (cands, scores) in read(prepared, "test").items():
        got = dict(zip(cands, scores))
        assert "y" not in got  # y is in every test history, so it is excluded
        assert got["z"] == 0.0, user  # the test target is never counted


def test_candidates_never_contain_history_items(tmp_path):
    prepared = make_prepared(tmp_path, HAND)
    build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=6))
    for split, cut in (("val", -2), ("test", -1)):
        for user, (cands, _) in read(prepared, split).items():
            assert not set(cands) & set(HAND[user][:cut]), (split, user)
            assert len(cands) == len(set(HAND["u1"] + HAND["u4"]) - set(HAND[user][:cut]))


def test_second_build_is_skipped_and_config_change_rebuilds(tmp_path, caplog):
    prepared = make_prepared(tmp_path, HAND)
    first = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    mtime = prepared.candidates_path("popularity", "val").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="retrieval"):
        again = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    assert "up to date" in caplog.text
    assert again == first
    assert prepared.candidates_path("popularity", "val").stat().st_mtime_ns == mtime
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retrieval"):
        changed = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=2))
    assert "up to date" not in caplog.text
    assert changed["config_hash"] != first["config_hash"]
    assert all(len(c) == 2 for c, _ in read(prepared, "val").values())


def test_candidates_parquet_schema(tmp_path):
    import pyarrow.parquet as pq

    prepared = make_prepared(tmp_path, HAND)
    build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    schema = pq.read_schema(prepared.candidates_path("popularity", "test"))
    assert str(schema.field("user_id").type) == "string"
    assert str(schema.field("candidates").type) == "list<element: string>"
    assert str(schema.field("scores").type) == "list<element: float>"


def test_changed_dataset_content_rebuilds(tmp_path, caplog):
    build_candidates(make_prepared(tmp_path, HAND), RetrievalConfig(retriever="popularity", top_k=3))
    changed = {**HAND, "u5": ["f", "e", "d"]}
    prepared = make_prepared(tmp_path, changed)  # same folder, new content hash
    with caplog.at_level(logging.INFO, logger="retrieval"):
        meta = build_candidates(prepared, RetrievalConfig(retriever="popularity", top_k=3))
    assert "up to date" not in caplog.text
    assert meta["dataset_hash"] == prepared.content_hash and meta["users"] == 5
    assert "u5" in read(prepared, "test")
