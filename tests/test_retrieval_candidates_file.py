"""External candidates files: list and long forms, Parquet and CSV, and every validation error."""
import json
import logging
import math

import pandas as pd
import pytest

from retrieval import read_candidates
from retrieval_helpers import make_prepared

SEQS = {
    "u1": ["a", "b", "c", "d"],
    "u2": ["b", "c", "a"],
    "u3": ["c", "e", "b", "a"],
}


@pytest.fixture
def prepared(tmp_path):
    return make_prepared(tmp_path / "prep", SEQS, titles={"f": "an item nobody has seen yet"})


def as_dict(df):
    return {u: (list(c), list(s)) for u, c, s in zip(df["user_id"], df["candidates"], df["scores"])}


def test_parquet_list_form_with_scores(prepared, tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"user_id": ["u2", "u1"], "candidates": [["d", "e"], ["e"]],
                  "scores": [[0.9, 0.5], [0.1]]}).to_parquet(path)
    df = read_candidates(path, prepared, "test")
    assert as_dict(df) == {"u2": (["d", "e"], [0.9, 0.5]), "u1": (["e"], [0.1])}
    assert df["user_id"].tolist() == ["u2", "u1"]  # file order kept
    assert df.attrs["missing_users"] == 1 and df.attrs["has_scores"]


def test_parquet_integer_ids_are_read_as_strings(tmp_path):
    prepared = make_prepared(tmp_path / "prep", {"7": ["10", "9", "100"], "8": ["9", "10", "11"]})
    path = tmp_path / "c.parquet"
    pd.DataFrame({"user_id": [7, 8], "candidates": [[11, 100], [100]]}).to_parquet(path)
    df = read_candidates(path, prepared, "val")
    assert df["user_id"].tolist() == ["7", "8"]
    assert df["candidates"].tolist() == [["11", "100"], ["100"]]


def test_csv_list_form_accepts_space_comma_and_json_lists(prepared, tmp_path):
    path = tmp_path / "c.csv"
    pd.DataFrame({"user_id": ["u1", "u2", "u3"],
                  "candidates": ["e f", "d,e, f", json.dumps(["f", "d"])]}).to_csv(path, index=False)
    df = read_candidates(path, prepared, "val")
    assert df["candidates"].tolist() == [["e", "f"], ["d", "e", "f"], ["f", "d"]]
    # No scores in the file: NaN, one per candidate.
    assert [len(s) for s in df["scores"]] == [2, 3, 2]
    assert all(math.isnan(x) for s in df["scores"] for x in s)
    assert not df.attrs["has_scores"] and df.attrs["missing_users"] == 0


def test_csv_long_form_orders_by_rank(prepared, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("user_id,item_id,rank,score\nu1,f,2,0.2\nu2,d,1,0.7\nu1,e,1,0.9\nu1,d,3,0.1\n")
    df = read_candidates(path, prepared, "test")
    assert as_dict(df) == {"u1": (["e", "f", "d"], [0.9, 0.2, 0.1]), "u2": (["d"], [0.7])}


def test_csv_long_form_without_rank_keeps_file_order(prepared, tmp_path, caplog):
    path = tmp_path / "c.csv"
    path.write_text("user_id,item_id\nu3,f\nu3,d\nu1,e\n")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        df = read_candidates(path, prepared, "test")
    assert df["candidates"].tolist() == [["f", "d"], ["e"]]
    assert df.attrs["missing_users"] == 1
    assert "1 of 3 test users have no candidates" in caplog.text


def test_unknown_users_error_lists_five_examples_and_total(prepared, tmp_path):
    path = tmp_path / "c.csv"
    users = ["u1"] + [f"x{i}" for i in range(7)]
    pd.DataFrame({"user_id": users, "candidates": ["e"] * len(users)}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"7 user ids not in the prepared dataset") as err:
        read_candidates(path, prepared, "test")
    msg = str(err.value)
    assert all(f"'x{i}'" in msg for i in range(5)) and "'x5'" not in msg


def test_unknown_items_error(prepared, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("user_id,item_id\nu1,e\nu1,zz\nu2,yy\n")
    with pytest.raises(ValueError, match=r"2 item ids not in the prepared dataset, e.g. 'zz', 'yy'"):
        read_candidates(path, prepared, "test")


def test_duplicate_item_within_a_user_names_the_user(prepared, tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"user_id": ["u1", "u2"], "candidates": [["e"], ["d", "e", "d"]]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"user 'u2' lists item 'd' more than once"):
        read_candidates(path, prepared, "test")


def test_duplicate_item_in_long_form_names_the_user(prepared, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("user_id,item_id\nu3,f\nu3,f\n")
    with pytest.raises(ValueError, match=r"user 'u3' lists item 'f' more than once"):
        read_candidates(path, prepared, "test")


def test_empty_list_names_the_user(prepared, tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"user_id": ["u1", "u3"], "candidates": [["e"], []]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"user 'u3' has an empty candidate list"):
        read_candidates(path, prepared, "test")


def test_user_listed_twice_in_list_form_is_an_error(prepared, tmp_path):
    path = tmp_path / "c.csv"
    pd.DataFrame({"user_id": ["u1", "u1"], "candidates": ["e", "f"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"user 'u1' has more than one row"):
        read_candidates(path, prepared, "test")


def test_scores_length_mismatch_and_bad_columns(prepared, tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"user_id": ["u1"], "candidates": [["e", "f"]], "scores": [[1.0]]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"user 'u1': 1 scores for 2 candidates"):
        read_candidates(path, prepared, "test")
    path = tmp_path / "d.csv"
    path.write_text("user,item\nu1,e\n")
    with pytest.raises(ValueError, match=r"needs a 'user_id' column"):
        read_candidates(path, prepared, "test")
    with pytest.raises(ValueError, match=r"unsupported candidates file type"):
        path = tmp_path / "c.json"
        path.write_text("{}")
        read_candidates(path, prepared, "test")
