"""End to end on ML-100k with the real posters: data_prepare.py (image map) -> run_rerank.py in every mode
(--mode all) with tiny random Qwen3 / Qwen3-VL models of the real architectures."""
import json

import pandas as pd
import pytest

import data_prepare
from config import RerankConfig
from dataset.format import PreparedDataset
from rerank.item_text import write_summaries
from rerank.pipeline import run
from tiny_models import shared_path, tiny_qwen3_dir, tiny_qwen3vl_dir


@pytest.fixture(scope="module")
def ml100k_posters(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("prep") / "ml-100k-posters"
    posters = shared_path("data", "ml-1m-posters", "ml100k_item_to_ml1m_movie.tsv")
    assert data_prepare.main([
        "--dataset", "ml-100k", "--data_root", str(ml100k_dir), "--retriever", "popularity",
        "--image_map", str(posters), "--image_map_columns", "ml100k_item_id,ml1m_movie_id",
        "--image_template", "MovieImages/{}.jpg", "--image_cache_dir", str(out.parent / "cache"),
        "--output_dir", str(out)]) == 0
    prepared = PreparedDataset(out)
    items = list(prepared.items.index)
    # summaries + captions for all but every third item (those fall back to title-only)
    have = [i for n, i in enumerate(items) if n % 3]
    write_summaries(prepared, pd.DataFrame({"item_id": have, "summary": [f"SUM-{i}" for i in have],
                                            "caption": [f"CAP-{i}" for i in have]}))
    return prepared


def test_raw_image_on_a_dataset_without_images_is_a_clear_error(tmp_path, ml100k_dir):
    out = tmp_path / "noimg"
    data_prepare.main(["--dataset", "ml-100k", "--data_root", str(ml100k_dir), "--retriever", "popularity",
                       "--output_dir", str(out)])
    with pytest.raises(ValueError, match="has no item images"):
        run(RerankConfig(data=str(out), retriever="popularity", mode="raw_image", vl_model=str(tiny_qwen3vl_dir()),
                         max_users=1, output_dir=str(tmp_path / "run")))


def test_mode_all_runs_every_mode_with_real_posters(ml100k_posters, tmp_path):
    prepared = ml100k_posters
    cfg = RerankConfig(data=str(prepared.root), retriever="popularity", mode="all", model=str(tiny_qwen3_dir()),
                       vl_model=str(tiny_qwen3vl_dir()), max_users=2, max_history=3, max_images=8,
                       output_dir=str(tmp_path / "run"), dump_prompts=str(tmp_path / "p"))
    summary = run(cfg)
    assert set(summary["modes"]) == {"text", "semantic_summary_small", "semantic_summary", "caption", "raw_image"}
    table = (tmp_path / "run" / "comparison.md").read_text()
    for mode in summary["modes"]:
        assert f"| {mode} |" in table
        assert (tmp_path / "run" / mode / "predictions.parquet").is_file()

    images = prepared.items["image_path"].dropna()
    for line in open(tmp_path / "p.raw_image.jsonl"):
        p = json.loads(line)
        history = list(prepared.sequences.at[p["user_id"], "items"])[-4:-1]
        shown = history + p["candidates"]
        with_img = [i for i in shown if i in images.index]
        assert len(p["images"]) == min(8, len(with_img))  # one image per item with a poster, capped
        assert all(str(prepared.root / images[i]) in p["images"] for i in p["candidates"][:8 - len(history)]
                   if i in images.index)
        assert p["prompt"].count("<|image_pad|>") == len(p["images"])

    for line in open(tmp_path / "p.caption.jsonl"):
        p = json.loads(line)
        for n, i in enumerate(p["candidates"]):
            has = list(prepared.items.index).index(i) % 3 != 0
            assert (f"— CAP-{i}\n" in p["prompt"]) == has and "SUM-" not in p["prompt"]
    m = summary["modes"]["semantic_summary"]
    assert m["counts"]["title_only_fallback_items"] > 0 and m["model"]["backend"] == "qwen3vl"
    assert summary["modes"]["semantic_summary_small"]["model"]["backend"] == "transformers"
