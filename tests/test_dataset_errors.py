"""Bad input: each case is a clear error naming the file/row, or a skip counted in the manifest."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from config import DataConfig
from dataset.format import PreparedDataset
from dataset.prepare import prepare
from dataset.sources.movielens import download_ml100k

GENRE_FLAGS = "|".join(["0"] * 19)


def _ml_folder(root: Path, data_lines: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(line + "\n" for line in data_lines))
    (root / "u.item").write_text("".join(f"{i}|Movie {i} (1999)|01-Jan-1999||http://x|{GENRE_FLAGS}\n"
                                         for i in range(1, 6)), encoding="latin-1")
    return root


def _good_lines() -> list[str]:
    return [f"{u}\t{i}\t4\t{100 * u + i}" for u in (1, 2) for i in (1, 2, 3)]


def _ml_cfg(root: Path, out: Path, **kw) -> DataConfig:
    return DataConfig(dataset="ml-100k", data_root=str(root), min_uc=1, min_sc=1, output_dir=str(out), **kw)


def test_missing_data_root_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*u\.data and u\.item"):
        prepare(_ml_cfg(tmp_path / "nope", tmp_path / "o"))


def test_missing_file_names_the_file_and_what_was_expected(tmp_path):
    root = _ml_folder(tmp_path / "ml", _good_lines())
    (root / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match=r"u\.item not found: expected MovieLens 100K items"):
        prepare(_ml_cfg(root, tmp_path / "o"))


def test_download_failure_says_to_pass_data_root(tmp_path):
    # port 9 (discard) on localhost refuses connections: an offline download without touching the internet
    with pytest.raises(RuntimeError, match="--data_root"):
        download_ml100k(tmp_path, url="http://127.0.0.1:9/ml-100k.zip", timeout=5)
    assert list(tmp_path.iterdir()) == []  # no partial archive left behind


def test_malformed_rows_are_counted_and_reported_with_line_numbers(tmp_path, caplog):
    lines = _good_lines()
    lines.insert(1, "1\t4\tfive\t123")        # line 2: non-numeric rating
    lines.insert(3, "2\t4\t3")                # line 4: 3 fields
    lines.insert(5, "2\t5\t3\t12:30")         # line 6: non-integer timestamp
    lines.insert(6, "1\t5\t3\t12")            # line 7: fine
    root = _ml_folder(tmp_path / "ml", lines)
    with caplog.at_level(logging.WARNING):
        out = prepare(_ml_cfg(root, tmp_path / "o"))
    m = PreparedDataset(out).manifest
    assert m["skipped"]["malformed_rows"] == {"interactions": 3, "items": 0}
    assert m["stats"]["interactions"] == 7
    assert "skipped 3 malformed" in caplog.text
    for where in ("line 2:", "line 4:", "line 6:"):
        assert where in caplog.text
    assert "u.data" in caplog.text


def test_only_three_examples_are_shown(tmp_path, caplog):
    lines = _good_lines() + [f"9\t1\tbad{k}\t1" for k in range(5)]
    root = _ml_folder(tmp_path / "ml", lines)
    with caplog.at_level(logging.WARNING):
        out = prepare(_ml_cfg(root, tmp_path / "o"))
    assert PreparedDataset(out).manifest["skipped"]["malformed_rows"]["interactions"] == 5
    assert "line 9:" in caplog.text and "line 10:" not in caplog.text  # lines 7, 8, 9 shown


def test_all_rows_malformed_is_an_error(tmp_path):
    root = _ml_folder(tmp_path / "ml", ["a,b,c,d", "1;2;3;4"])
    with pytest.raises(ValueError, match=r"u\.data: all 2 rating lines are malformed.*line 1"):
        prepare(_ml_cfg(root, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'nosuch'.*ml-100k.*sample.*Beauty"):
        prepare(DataConfig(dataset="nosuch", data_root=str(tmp_path), output_dir=str(tmp_path / "o")))


def test_amazon_category_without_files_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"reviews_Video_Games_5\.json\.gz.*meta_Video_Games\.json\.gz"):
        prepare(DataConfig(dataset="games", data_root=str(tmp_path), output_dir=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="needs --data_root"):
        prepare(DataConfig(dataset="beauty", output_dir=str(tmp_path / "o")))


def _write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


META = [
    # the 2014 meta files are Python literals, not JSON
    "{'asin': 'A1', 'title': 'Lipstick &amp; Liner', 'imUrl': 'http://img/a1.jpg', "
    "'categories': [['Beauty', 'Makeup', 'Lips']], 'brand': 'Acme', 'price': 9.5}",
    json.dumps({"asin": "A2", "title": "Shampoo", "description": "Cleans hair.", "categories": [["Beauty"]]}),
    json.dumps({"asin": "A3", "title": "Comb"}),
    json.dumps({"asin": "A4"}),  # no title
]


def test_amazon_ratings_csv_for_any_category_name(tmp_path):
    # "toys_demo" is no official category, but its files are there -> Toys_Demo
    (tmp_path / "ratings_Toys_Demo.csv").write_text(
        "U1,A1,5.0,300\nU1,A2,4.0,100\nU1,A3,3.0,200\nU2,A3,5.0,1\nU2,A4,5.0,2\nU2,A1,x,3\nU2,A2,1.0,4\n")
    _write_gz(tmp_path / "meta_Toys_Demo.json.gz", META)
    out = prepare(DataConfig(dataset="toys_demo", data_root=str(tmp_path), min_uc=1, min_sc=1,
                             output_dir=str(tmp_path / "o")))
    ds = PreparedDataset(out)
    # U2: A3, A4 (no title -> dropped), A1 (malformed rating -> skipped), A2 -> 2 items -> too short
    assert ds.sequences["items"].to_dict() == {"U1": ["A2", "A3", "A1"]}
    assert ds.manifest["skipped"]["malformed_rows"] == {"interactions": 1, "items": 0}
    assert ds.manifest["skipped"]["no_title"]["items"] == 1
    a1 = ds.items.loc["A1"]
    assert a1["title"] == "Lipstick & Liner" and a1["image"] == "http://img/a1.jpg"
    assert a1["text"] == "Categories: Beauty > Makeup > Lips. Brand: Acme. Price: $9.5."


def test_amazon_reviews_5core_wins_over_the_sequence_file(tmp_path):
    (tmp_path / "user_sequence.txt").write_text("U9 A1 A2 A3\n")
    reviews = [json.dumps({"reviewerID": "U1", "asin": a, "overall": 5.0, "unixReviewTime": t})
               for a, t in (("A3", 30), ("A1", 10), ("A2", 20))] + ["not a record"]
    _write_gz(tmp_path / "reviews_Beauty_5.json.gz", reviews)
    _write_gz(tmp_path / "meta_Beauty.json.gz", META)
    out = prepare(DataConfig(dataset="beauty", data_root=str(tmp_path), min_uc=1, min_sc=1,
                             output_dir=str(tmp_path / "o")))
    ds = PreparedDataset(out)
    assert ds.sequences["items"].to_dict() == {"U1": ["A1", "A2", "A3"]}
    assert ds.manifest["skipped"]["malformed_rows"]["interactions"] == 1


def test_user_with_empty_history_is_a_counted_skip(tmp_path):
    (tmp_path / "seqs.csv").write_text("user_id,items\nu1,a b c\nu2,\nu3,a c b\n")
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    out = prepare(DataConfig(dataset="custom", interactions=str(tmp_path / "seqs.csv"),
                             items=str(tmp_path / "items.csv"), min_uc=1, min_sc=1, output_dir=str(tmp_path / "o")))
    m = PreparedDataset(out).manifest
    assert m["skipped"]["empty_history"] == {"users": 1}
    assert m["stats"]["users"] == 2


def test_user_emptied_by_min_rating_is_counted(tmp_path):
    (tmp_path / "inter.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"good,{i},5\nbad,{i},1\n" for i in "abc"))
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    out = prepare(DataConfig(dataset="custom", interactions=str(tmp_path / "inter.csv"),
                             items=str(tmp_path / "items.csv"), min_rating=3, min_uc=1, min_sc=1,
                             output_dir=str(tmp_path / "o")))
    m = PreparedDataset(out).manifest
    assert m["skipped"]["below_min_rating"] == {"interactions": 3, "users": 1, "items": 0}


def test_min_rating_without_ratings_is_noted(tmp_path):
    (tmp_path / "seqs.csv").write_text("user_id,items\nu1,a b c\n")
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    out = prepare(DataConfig(dataset="custom", interactions=str(tmp_path / "seqs.csv"),
                             items=str(tmp_path / "items.csv"), min_rating=4, min_uc=1, min_sc=1,
                             output_dir=str(tmp_path / "o")))
    notes = PreparedDataset(out).manifest["notes"]
    assert any("min_rating=4" in n and "no ratings" in n for n in notes)


def test_custom_file_with_wrong_columns_names_the_file(tmp_path):
    (tmp_path / "inter.csv").write_text("user,item\n1,2\n")
    (tmp_path / "items.csv").write_text("item_id,title\n2,B\n")
    with pytest.raises(ValueError, match=r"inter\.csv: columns \['user', 'item'\] do not match"):
        prepare(DataConfig(dataset="custom", interactions=str(tmp_path / "inter.csv"),
                           items=str(tmp_path / "items.csv"), output_dir=str(tmp_path / "o")))


def test_custom_csv_row_with_wrong_field_count_is_skipped(tmp_path, caplog):
    (tmp_path / "inter.csv").write_text("user_id,item_id\nu,a\nu,b,extra\nu,b\nu,c\n")
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    with caplog.at_level(logging.WARNING):
        out = prepare(DataConfig(dataset="custom", interactions=str(tmp_path / "inter.csv"),
                                 items=str(tmp_path / "items.csv"), min_uc=1, min_sc=1,
                                 output_dir=str(tmp_path / "o")))
    assert PreparedDataset(out).sequences.loc["u", "items"] == ["a", "b", "c"]
    assert "line 3:" in caplog.text and "expected 2 fields, got 3" in caplog.text
