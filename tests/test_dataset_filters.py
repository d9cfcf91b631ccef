"""Filtering on hand-made tables: k-core rounds, the too-short rule, min_rating, order and split."""
from __future__ import annotations

import pandas as pd
import pytest

from dataset.filters import apply_filters, build_sequences, kcore, sort_chronologically
from dataset.format import split_example


def _table(seqs: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, i) for u, items in seqs.items() for i in items]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _items(ids, untitled=()) -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(ids), "title": ["" if i in untitled else f"T {i}" for i in ids],
                         "text": "", "image": None})


# min_uc=3, min_sc=2. Round 1: F has 2 interactions (< 3) -> out; w (only C) and q (only E) have 1 (< 2) -> out.
# Round 2: C is left with x, y (2 < 3) -> out. Round 3 removes nothing.
KCORE_TABLE = {"A": ["x", "y", "z"], "B": ["x", "y", "z"], "C": ["x", "y", "w"], "D": ["y", "z", "x"],
               "E": ["z", "x", "y", "q"], "F": ["x", "y"]}


def test_kcore_item_removal_in_round_one_drops_a_user_in_round_two():
    out, rounds = kcore(_table(KCORE_TABLE), min_uc=3, min_sc=2)
    assert rounds == 2
    assert sorted(out["user_id"].unique()) == ["A", "B", "D", "E"]
    assert sorted(out["item_id"].unique()) == ["x", "y", "z"]
    assert len(out) == 12  # 4 users x 3 items


def test_apply_filters_counts_kcore_removals_and_keeps_order():
    items = _items(["x", "y", "z", "w", "q"])
    res = apply_filters(_table(KCORE_TABLE), items, min_rating=0, min_uc=3, min_sc=2)
    assert res.skipped["kcore"] == {"interactions": 18 - 12, "users": 2, "items": 2, "rounds": 2}
    assert res.skipped["too_short"] == {"interactions": 0, "users": 0, "items": 0}
    seqs = build_sequences(res.interactions).set_index("user_id")["items"].to_dict()
    # no timestamps: file order is kept, and E loses q from the end
    assert seqs == {"A": ["x", "y", "z"], "B": ["x", "y", "z"], "D": ["y", "z", "x"], "E": ["z", "x", "y"]}
    assert sorted(res.items["item_id"]) == ["x", "y", "z"]


def test_split_on_filtered_sequence_is_leave_one_out():
    res = apply_filters(_table(KCORE_TABLE), _items(["x", "y", "z", "w", "q"]), 0, 3, 2)
    seq = build_sequences(res.interactions).set_index("user_id")["items"]["D"]
    val, test = split_example("D", seq, "val"), split_example("D", seq, "test")
    assert (val.history, val.target) == (["y"], "z")
    assert (test.history, test.target) == (["y", "z"], "x")


def test_too_short_user_removal_cascades_through_kcore():
    # min_uc=1, min_sc=2: k-core keeps everything at first (a: G,H; b: G,I,J; c, d: H,I,J).
    # too_short drops G (2 items) -> a is left with H only -> k-core drops a -> H has 2 -> too_short drops H.
    table = _table({"G": ["a", "b"], "H": ["a", "c", "d"], "I": ["b", "c", "d"], "J": ["c", "d", "b"]})
    res = apply_filters(table, _items("abcd"), min_rating=0, min_uc=1, min_sc=2)
    seqs = build_sequences(res.interactions).set_index("user_id")["items"].to_dict()
    assert seqs == {"I": ["b", "c", "d"], "J": ["c", "d", "b"]}
    assert res.skipped["too_short"] == {"interactions": 4, "users": 2, "items": 0}
    assert res.skipped["kcore"] == {"interactions": 1, "users": 0, "items": 1, "rounds": 1}


def test_ties_in_timestamp_keep_file_order():
    df = pd.DataFrame({
        "user_id": ["u1", "u2", "u1", "u1", "u2", "u1", "u1"],
        "item_id": ["p", "m", "q", "r", "n", "s", "t"],
        "timestamp": [5, 7, 3, 3, 7, 1, 3],
    })
    out = sort_chronologically(df)
    seqs = build_sequences(out).set_index("user_id")["items"].to_dict()
    # u1: s (ts 1), then q, r, t (ts 3, in file order), then p (ts 5); u2: m, n tie at 7 -> file order
    assert seqs == {"u1": ["s", "q", "r", "t", "p"], "u2": ["m", "n"]}


def test_ties_are_stable_for_a_large_block_of_equal_timestamps():
    # quicksort-style unstable sorts scramble long runs of equal keys; the explicit row key must not
    n = 5000
    df = pd.DataFrame({"user_id": "u", "item_id": [f"i{k}" for k in range(n)], "timestamp": [1] * n})
    assert list(sort_chronologically(df)["item_id"]) == [f"i{k}" for k in range(n)]


def test_min_rating_untitled_items_and_missing_metadata_are_counted():
    df = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c", "c", "d", "d", "d"],
        "item_id": ["1", "2", "3", "4", "1", "2", "3", "1", "2", "3", "9", "1", "2", "1"],
        "rating": [5, 5, 5, 1, 4, 4, 2, 5, 5, 5, 5, 5, 5, 5],
    })
    # item 3 has no title; item 9 has no row in the items table
    res = apply_filters(df, _items(["1", "2", "3", "4"], untitled={"3"}), min_rating=4, min_uc=1, min_sc=1)
    # rating < 4: (a,4) and (b,3); item 4 had only (a,4) -> gone
    assert res.skipped["below_min_rating"] == {"interactions": 2, "users": 0, "items": 1}
    # untitled item 3 still has (a,3) and (c,3)
    assert res.skipped["no_title"] == {"interactions": 2, "users": 0, "items": 1, "items_in_table": 1}
    assert res.skipped["no_metadata"] == {"interactions": 1, "users": 0, "items": 1}
    # a, b and c are each left with items 1, 2: too short for leave-one-out; d keeps 1, 2, 1
    assert res.skipped["too_short"] == {"interactions": 6, "users": 3, "items": 0}
    assert res.skipped["no_interactions"] == {"items": 0}
    assert build_sequences(res.interactions).set_index("user_id")["items"].to_dict() == {"d": ["1", "2", "1"]}
    assert sorted(res.items["item_id"]) == ["1", "2"]


def test_filtering_everything_away_is_an_error():
    with pytest.raises(ValueError, match="no interactions left"):
        apply_filters(_table({"u": ["a", "b", "c"]}), _items("abc"), 0, min_uc=5, min_sc=1)


def test_duplicate_interactions_are_kept_and_counted_by_kcore():
    table = _table({"u": ["a", "a", "b", "a"], "v": ["a", "b", "b"]})
    res = apply_filters(table, _items("ab"), min_rating=0, min_uc=3, min_sc=1)
    seqs = build_sequences(res.interactions).set_index("user_id")["items"].to_dict()
    assert seqs == {"u": ["a", "a", "b", "a"], "v": ["a", "b", "b"]}


def test_numeric_user_ids_are_ordered_numerically():
    table = _table({"10": ["a", "b", "c"], "9": ["a", "b", "c"], "100": ["a", "b", "c"]})
    res = apply_filters(table, _items("abc"), 0, 1, 1)
    assert list(build_sequences(res.interactions)["user_id"]) == ["9", "10", "100"]
