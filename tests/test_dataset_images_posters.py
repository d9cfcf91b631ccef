"""Real posters: ML-100K (5-core) with the ML-1M posters attached through the general --image_map options.

The expected counts are computed here from the mapping TSV and the poster files present, independently of
``dataset.images``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from config import DataConfig
from dataset.format import PreparedDataset
from dataset.prepare import prepare


@pytest.fixture(scope="module")
def posters_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "ml-1m-posters"
    if not (path / "ml100k_item_to_ml1m_movie.tsv").is_file():
        pytest.fail(f"{path}/ml100k_item_to_ml1m_movie.tsv is missing from the shared folder")
    return path


def _cfg(ml100k_dir: Path, posters_dir: Path, out: Path, cache: Path, **kw) -> DataConfig:
    return DataConfig(dataset="ml-100k", data_root=str(ml100k_dir), output_dir=str(out),
                      image_map=str(posters_dir / "ml100k_item_to_ml1m_movie.tsv"), image_dir=str(posters_dir),
                      image_map_columns="ml100k_item_id,ml1m_movie_id", image_template="MovieImages/{}.jpg",
                      image_cache_dir=str(cache), **kw)


@pytest.fixture(scope="module")
def posters(ml100k_dir, posters_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("posters")
    cfg = _cfg(ml100k_dir, posters_dir, root / "first", root / "cache")
    return cfg, PreparedDataset(prepare(cfg))


def _expected_poster_files(ds: PreparedDataset, posters_dir: Path) -> dict[str, Path]:
    with open(posters_dir / "ml100k_item_to_ml1m_movie.tsv", newline="") as f:
        movie = {r["ml100k_item_id"]: r["ml1m_movie_id"] for r in csv.DictReader(f, delimiter="\t")}
    files = {i: posters_dir / "MovieImages" / f"{movie[i]}.jpg" for i in ds.items["item_id"] if movie.get(i)}
    return {i: p for i, p in files.items() if p.is_file()}


def test_attached_count_matches_the_mapped_files_present(posters, posters_dir):
    _, ds = posters
    expected = _expected_poster_files(ds, posters_dir)
    m = ds.manifest["images"]
    assert ds.manifest["stats"]["items"] == len(ds.items) == 1349  # 5-core ML-100K
    assert m["attached"] == len(expected) and set(ds.items.index[ds.items["image_path"].notna()]) == set(expected)
    assert m["corrupt"] == m["too_large"] == m["unknown_items_in_map"] == 0
    assert m["attached"] + m["no_source"] + m["missing_file"] == 1349


def test_every_poster_opens_as_rgb_at_its_original_size(posters, posters_dir):
    _, ds = posters
    expected = _expected_poster_files(ds, posters_dir)
    for item_id, rel in ds.items["image_path"].dropna().items():
        with Image.open(ds.root / rel) as img, Image.open(expected[item_id]) as src:
            img.load()
            assert img.mode == "RGB" and max(img.size) <= 448 and img.size == src.size


def test_second_prepare_into_a_new_folder_uses_the_cache(posters, ml100k_dir, posters_dir, tmp_path):
    cfg, first = posters
    again = PreparedDataset(prepare(DataConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "again")})))
    m1, m2 = first.manifest["images"], again.manifest["images"]
    distinct = len({p.resolve() for p in _expected_poster_files(first, posters_dir).values()})
    assert (m1["processed"], m1["cached"]) == (distinct, 0)
    assert (m2["processed"], m2["cached"]) == (0, distinct)
    assert again.manifest["hashes"] == first.manifest["hashes"]
