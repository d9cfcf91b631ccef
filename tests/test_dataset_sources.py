"""Real and synthetic sources end to end (load -> filter -> prepared folder), checked against independent
computations: published counts, and a plain-Python re-implementation of the filters written for the tests."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from config import DataConfig
from dataset.format import PreparedDataset, split_example
from dataset.prepare import prepare


def reference_kcore(seqs: dict[str, list[str]], k_user: int, k_item: int) -> dict[str, list[str]]:
    """Simultaneous-removal k-core plus the >= 3 rule, with Counters (independent of dataset.filters)."""
    while True:
        n_item = Counter(i for s in seqs.values() for i in s)
        new = {}
        for u, s in seqs.items():
            if len(s) < k_user:
                continue
            kept = [i for i in s if n_item[i] >= k_item]
            if kept:
                new[u] = kept
        new = {u: s for u, s in new.items() if len(s) >= 3} if new == seqs else new
        if new == seqs:
            return seqs
        seqs = new


def sequences_of(path: Path) -> dict[str, list[str]]:
    return PreparedDataset(path).sequences["items"].to_dict()


# ------------------------------------------------------------------ MovieLens 100K

@pytest.fixture(scope="module")
def ml100k(ml100k_dir, tmp_path_factory) -> Path:
    cfg = DataConfig(dataset="ml-100k", data_root=str(ml100k_dir), min_rating=0, min_uc=5, min_sc=5,
                     output_dir=str(tmp_path_factory.mktemp("prep") / "ml"))
    return prepare(cfg)


def test_ml100k_5core_has_the_published_counts(ml100k):
    stats = PreparedDataset(ml100k).manifest["stats"]
    assert stats == {"users": 943, "items": 1349, "interactions": 99287}
    assert len(PreparedDataset(ml100k).items) == 1349


def test_ml100k_sequences_match_an_independent_sort_and_kcore(ml100k, ml100k_dir):
    with open(ml100k_dir / "u.data") as f:
        rows = [line.split("\t") for line in f]
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for n, (u, i, _r, ts) in enumerate(rows):
        by_user.setdefault(u, []).append((int(ts), n, i))
    raw = {u: [i for _, _, i in sorted(v)] for u, v in by_user.items()}  # (ts, file row) order
    assert sequences_of(ml100k) == reference_kcore(raw, 5, 5)


def test_ml100k_items_have_titles_and_genre_text(ml100k):
    items = PreparedDataset(ml100k).items
    # u.item line 1: "1|Toy Story (1995)|01-Jan-1995||...|0|0|0|1|1|1|0|..." -> Animation, Children's, Comedy
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "text"] == "Genres: Animation, Children's, Comedy. Released: 01-Jan-1995"
    assert (items["title"] != "").all()


# ------------------------------------------------------------------ Amazon Beauty (5-core sequence form)

def test_beauty_sequence_form_loads_and_drops_untitled_items(beauty_dir, tmp_path):
    out = prepare(DataConfig(dataset="beauty", data_root=str(beauty_dir), output_dir=str(tmp_path / "b")))
    ds = PreparedDataset(out)
    m = ds.manifest
    # published counts of user_sequence.txt (shared/data/SOURCES.md)
    assert m["raw"] == {"users": 22363, "items": 12101, "interactions": 198502, "items_in_table": 12101}
    assert m["skipped"]["no_title"]["items"] == 7

    raw = {}
    with open(beauty_dir / "user_sequence.txt") as f:
        for line in f:
            u, *items = line.split()
            raw[u] = items
    with open(beauty_dir / "Amazon_Beauty.item", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar='"'))[1:]
    untitled = {r[0] for r in rows if not r[1].strip()}
    assert len(untitled) == 7
    raw = {u: [i for i in s if i not in untitled] for u, s in raw.items()}
    expected = reference_kcore(raw, 5, 5)
    assert sequences_of(out) == expected
    n_inter = sum(len(s) for s in expected.values())
    n_items = len({i for s in expected.values() for i in s})
    assert m["stats"] == {"users": len(expected), "items": n_items, "interactions": n_inter}
    # first item row: WAWO palette, categories list and brand from the RecBole columns
    row = ds.items.loc["7806397051"]
    assert row["title"].startswith("WAWO 15 Color")
    assert row["text"] == ("Categories: Beauty > Makeup > Face > Concealers & Neutralizers. Brand: COKA. "
                           "Price: $5.04.")


# ------------------------------------------------------------------ custom

def test_custom_csv_long_form_with_timestamps(tmp_path):
    (tmp_path / "inter.csv").write_text(
        "user_id,item_id,timestamp,rating\n"
        "u1,a,30,5\n"
        "u1,b,10,4\n"
        "u2,a,5,3\n"
        "u1,c,10,5\n"     # ties with (u1,b) at 10: file order -> b before c
        "u2,b,6,1\n"
        "u2,c,7,5\n"
        "u1,d,40,2\n"
    )
    (tmp_path / "items.csv").write_text(
        "item_id,title,text,category\n"
        "a,Alpha,first,x\n"
        "b,Beta,,y\n"
        "c,Gamma,third,x\n"
        "d,Delta,fourth,y\n"
    )
    cfg = DataConfig(dataset="custom", interactions=str(tmp_path / "inter.csv"), items=str(tmp_path / "items.csv"),
                     min_uc=1, min_sc=1, output_dir=str(tmp_path / "out"))
    ds = PreparedDataset(prepare(cfg))
    assert ds.sequences["items"].to_dict() == {"u1": ["b", "c", "a", "d"], "u2": ["a", "b", "c"]}
    assert ds.items.loc["b", "text"] == "" and ds.items.loc["c", "category"] == "x"
    assert ds.items["image"].isna().all()
    assert split_example("u1", ds.sequences.loc["u1", "items"], "test").target == "d"


def test_custom_csv_with_date_strings_and_min_rating(tmp_path):
    (tmp_path / "inter.csv").write_text(
        "user_id,item_id,timestamp,rating\n"
        "u1,a,2024-03-01 10:00:00,5\n"
        "u1,b,2024-01-01,5\n"
        "u1,c,2024-02-01,1\n"
        "u1,d,2024-02-15,4\n"
        "u1,e,2024-05-01,4\n"
    )
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\nd,D\ne,E\n")
    cfg = DataConfig(dataset="custom", interactions=str(tmp_path / "inter.csv"), items=str(tmp_path / "items.csv"),
                     min_rating=4, min_uc=1, min_sc=1, output_dir=str(tmp_path / "out"))
    ds = PreparedDataset(prepare(cfg))
    assert ds.sequences.loc["u1", "items"] == ["b", "d", "a", "e"]  # c (rating 1) dropped
    assert ds.manifest["skipped"]["below_min_rating"]["interactions"] == 1


def test_custom_parquet_sequence_form(tmp_path):
    pd.DataFrame({"user_id": ["7", "8", "9"],
                  "items": [["i1", "i2", "i3"], ["i3", "i1", "i2", "i4"], ["i2", "i1"]]}
                 ).to_parquet(tmp_path / "seqs.parquet")
    pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "title": ["One", "Two", "Three", "Four"],
                  "image": ["img/1.jpg", None, "", "http://x/4.jpg"]}).to_parquet(tmp_path / "items.parquet")
    cfg = DataConfig(dataset="custom", interactions=str(tmp_path / "seqs.parquet"),
                     items=str(tmp_path / "items.parquet"), min_uc=1, min_sc=1, output_dir=str(tmp_path / "o"))
    ds = PreparedDataset(prepare(cfg))
    # user 9 has 2 items: too short for leave-one-out; i4 then only appears for user 8
    assert ds.sequences["items"].to_dict() == {"7": ["i1", "i2", "i3"], "8": ["i3", "i1", "i2", "i4"]}
    assert ds.manifest["skipped"]["too_short"] == {"interactions": 2, "users": 1, "items": 0}
    assert ds.items.loc["i1", "image"] == "img/1.jpg" and pd.isna(ds.items.loc["i3", "image"])
    assert ds.items.loc["i1", "text"] == ""


def test_custom_csv_sequence_form_space_separated_and_json(tmp_path):
    (tmp_path / "seqs.csv").write_text('user_id,items\nu1,a b c\nu2,"[""c"", ""b"", ""a""]"\n')
    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    cfg = DataConfig(dataset="custom", interactions=str(tmp_path / "seqs.csv"), items=str(tmp_path / "items.csv"),
                     min_uc=1, min_sc=1, output_dir=str(tmp_path / "o"))
    assert sequences_of(prepare(cfg)) == {"u1": ["a", "b", "c"], "u2": ["c", "b", "a"]}


# ------------------------------------------------------------------ sample

@pytest.fixture(scope="module")
def sample_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sample")
    a = prepare(DataConfig(dataset="sample", seed=7, output_dir=str(root / "a")))
    b = prepare(DataConfig(dataset="sample", seed=7, output_dir=str(root / "b")))
    return a, b


def test_sample_is_byte_identical_for_the_same_seed(sample_pair):
    a, b = sample_pair
    ha = json.loads((a / "manifest.json").read_text())["hashes"]
    hb = json.loads((b / "manifest.json").read_text())["hashes"]
    assert ha == hb
    for name in ("items.parquet", "sequences.parquet", "images/" + sorted(p.name for p in (a / "images").iterdir())[0]):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_sample_changes_with_the_seed(sample_pair, tmp_path):
    other = prepare(DataConfig(dataset="sample", seed=8, output_dir=str(tmp_path / "c")))
    assert (other / "sequences.parquet").read_bytes() != (sample_pair[0] / "sequences.parquet").read_bytes()


def test_sample_has_one_png_per_item(sample_pair):
    from PIL import Image

    ds = PreparedDataset(sample_pair[0])
    assert ds.manifest["stats"]["items"] == len(ds.items) > 0
    for rel in ds.items["image"]:
        assert rel.startswith("images/") and rel.endswith(".png")
        with Image.open(ds.root / rel) as img:
            assert img.format == "PNG" and img.size == (64, 64)
    assert len(list((ds.root / "images").iterdir())) == len(ds.items)


def test_sample_sizes_and_lengths_follow_the_config(sample_pair):
    ds = PreparedDataset(sample_pair[0])
    assert ds.manifest["stats"]["users"] == 300
    assert ds.manifest["raw"]["items"] <= 200
    lengths = ds.sequences["items"].map(len)
    assert lengths.min() >= 8 and lengths.max() <= 30


def test_sample_targets_follow_the_history_genre(sample_pair):
    # A reader of titles/categories must beat random: predicting "the test target's genre is the most
    # frequent genre of the history" should be right far more often than 1 in 8.
    ds = PreparedDataset(sample_pair[0])
    cat = ds.items["category"].to_dict()
    assert ds.items["category"].nunique() == 8
    hits = 0
    for ex in ds.examples("test"):
        top = Counter(cat[i] for i in ex.history).most_common(1)[0][0]
        hits += cat[ex.target] == top
    assert hits / len(ds.sequences) > 0.4
