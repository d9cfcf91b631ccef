"""The prepared folder as a build product: manifest contents, no-op reruns, rebuilds, atomic replacement."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import data_prepare
import dataset.prepare as prep
from config import DataConfig, config_hash
from dataset.format import PreparedDataset, sha256_file


def _write_small_custom(root: Path) -> tuple[Path, Path]:
    inter, items = root / "inter.csv", root / "items.csv"
    inter.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{i},{10 * u + i}\n" for u in range(4) for i in range(u, u + 4)))
    items.write_text("item_id,title\n" + "".join(f"i{i},Item {i}\n" for i in range(8)))
    return inter, items


def _cfg(root: Path, **kw) -> DataConfig:
    inter, items = _write_small_custom(root)
    return DataConfig(dataset="custom", interactions=str(inter), items=str(items), min_uc=1, min_sc=1,
                      output_dir=str(root / "prepared"), **kw)


def test_manifest_records_config_stats_versions_and_file_hashes(tmp_path):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["dataset"] == "custom" and m["config"]["min_uc"] == 1
    assert m["config_hash"] == config_hash(cfg.content_keys())
    # 4 users x 4 items, items i0..i6 used, i7 listed but never interacted with
    assert m["stats"] == {"users": 4, "items": 7, "interactions": 16}
    assert m["skipped"]["no_interactions"] == {"items": 1}
    assert set(m["versions"]) >= {"python", "pandas", "pyarrow", "numpy"}
    assert m["hashes"] == {"items.parquet": sha256_file(out / "items.parquet"),
                           "sequences.parquet": sha256_file(out / "sequences.parquet")}
    assert "created" in m


def test_same_config_is_a_no_op(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with caplog.at_level(logging.INFO, logger="dataset.prepare"):
        assert prep.prepare(cfg) == out
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_changed_config_rebuilds(tmp_path):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    (out / "candidates").mkdir()  # stale downstream output must not survive a content change
    cfg2 = DataConfig(**{**cfg.__dict__, "min_sc": 2})
    assert prep.prepare(cfg2) == out
    m = PreparedDataset(out).manifest
    assert m["config"]["min_sc"] == 2
    # items used once (i0 by u0, i6 by u3) fall below min_sc=2; u0 and u3 keep 3 items each
    assert m["stats"] == {"users": 4, "items": 5, "interactions": 14}
    assert not (out / "candidates").exists()


def test_modified_output_file_triggers_rebuild(tmp_path):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    good = sha256_file(out / "items.parquet")
    (out / "items.parquet").write_bytes(b"garbage")
    prep.prepare(cfg)
    assert sha256_file(out / "items.parquet") == good


def test_changed_raw_input_triggers_rebuild(tmp_path):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    with open(cfg.interactions, "a") as f:
        f.write("u9,i0,1\nu9,i1,2\nu9,i2,3\n")
    prep.prepare(cfg)
    assert PreparedDataset(out).manifest["stats"]["users"] == 5


def test_default_output_dir_comes_from_the_config_hash(tmp_path, monkeypatch):
    import config

    monkeypatch.setattr(config, "DEFAULT_PREPARED_ROOT", tmp_path / "prepared")
    cfg = DataConfig(dataset="sample", sample_users=20, sample_items=16)
    out = prep.prepare(cfg)
    assert out == tmp_path / "prepared" / f"sample-{config_hash(cfg.content_keys())}"


def test_crash_during_rebuild_keeps_the_old_folder_and_leaves_no_temp(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    out = prep.prepare(cfg)
    old_hashes = PreparedDataset(out).manifest["hashes"]

    def boom(*a, **k):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(prep, "build_sequences", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prep.prepare(DataConfig(**{**cfg.__dict__, "min_sc": 2}))
    assert PreparedDataset(out).manifest["hashes"] == old_hashes
    assert sorted(p.name for p in out.parent.iterdir()) == ["inter.csv", "items.csv", "prepared"]


def test_refuses_to_replace_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a prepared dataset"):
        prep.prepare(cfg)
    assert (tmp_path / "prepared" / "notes.txt").read_text() == "mine"


def test_data_prepare_main_with_retriever_none(tmp_path, caplog):
    out = tmp_path / "s"
    with caplog.at_level(logging.INFO):
        rc = data_prepare.main(["--dataset", "sample", "--sample_users", "30", "--sample_items", "24",
                                "--retriever", "none", "--output_dir", str(out)])
    assert rc == 0
    assert PreparedDataset(out).manifest["stats"]["users"] == 30
    assert str(out) in caplog.text and not (out / "candidates").exists()
