"""The Qwen3-VL summariser on the tiny real-architecture model: batching, a real kill + resume, bad images,
the manifest record, the dataset-hash stamp, and which data_prepare flags turn the stage on.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import config
from config import SummaryConfig
from dataset.format import PreparedDataset
from dataset.qwen3vl_semantic_summary import PARTS_DIR, PART_GLOB, prefetched, resolve_cache, summarise
from rerank.item_text import SummaryMismatchError, read_summaries
from rerank.models.qwen3vl_loading import load_qwen3vl
from qwen3vl_helpers import make_vl_prepared, write_images
from tiny_models import REPO_ROOT, tiny_qwen3vl_dir

# small budgets keep each generate cheap; the texts still differ per image (see build_tiny_qwen3vl)
FAST = dict(max_new_tokens=8, caption_max_new_tokens=4, summary_threads=1)


@pytest.fixture(scope="module")
def tiny_vl():
    return load_qwen3vl(str(tiny_qwen3vl_dir()), device="cpu")


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()  # summary_threads=1 sets the process-wide count
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> SummaryConfig:
    return SummaryConfig(semantic_summary=True, summary_model=str(tiny_qwen3vl_dir()), **{**FAST, **kw})


def _table(ds: PreparedDataset) -> pd.DataFrame:
    return read_summaries(ds).sort_values("item_id").reset_index(drop=True)


def test_batched_summaries_equal_one_at_a_time(tmp_path, tiny_vl):
    batched = make_vl_prepared(tmp_path / "batched", 7)
    single = make_vl_prepared(tmp_path / "single", 7)
    summarise(batched, _cfg(semantic_summary_batch_size=4), loaded=tiny_vl)
    summarise(single, _cfg(semantic_summary_batch_size=1), loaded=tiny_vl)
    a, b = _table(batched), _table(single)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 7 and a["summary"].str.len().gt(0).all() and a["caption"].str.len().gt(0).all()
    assert a["summary"].nunique() > 1  # texts depend on the image, so equal tables are not a coincidence



def test_static_cache_and_padding_give_the_same_text_as_the_plain_path(tmp_path, tiny_vl):
    # static KV cache + lengths padded to a multiple of 64 (the CUDA fast path, minus compile) against
    # one image at a time with the default dynamic cache and no extra padding
    static = make_vl_prepared(tmp_path / "static", 6)
    plain = make_vl_prepared(tmp_path / "plain", 6)
    record = summarise(static, _cfg(semantic_summary_batch_size=4, summary_cache="static"), loaded=tiny_vl)
    summarise(plain, _cfg(semantic_summary_batch_size=1, summary_cache="dynamic"), loaded=tiny_vl)
    assert record["settings"]["kv_cache"] == "static" and record["settings"]["pad_to_multiple_of"] == 64
    pd.testing.assert_frame_equal(_table(static), _table(plain))


def test_auto_cache_is_dynamic_on_cpu_and_bad_values_are_refused(tiny_vl):
    model, _ = tiny_vl
    assert resolve_cache("auto", model) == "dynamic"  # static only pays off where transformers compiles (CUDA)
    assert resolve_cache("static", model) == "static"
    with pytest.raises(ValueError, match="summary_cache"):
        SummaryConfig(summary_cache="paged")
    with pytest.raises(ValueError, match="summary_pad_multiple"):
        SummaryConfig(summary_pad_multiple=0)


def test_prefetched_keeps_order_and_reraises_worker_errors():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in prefetched(failing()):
            got.append(x)
    assert got == [1]


def test_prefetched_worker_ends_when_the_consumer_stops_early():
    import threading

    gen = prefetched(iter(range(2)), depth=1)
    assert next(gen) == 0
    time.sleep(0.3)  # the worker has queued 1 and now waits to queue the end marker on the full queue
    gen.close()  # closing must release that wait, not leave the thread hanging
    deadline = time.time() + 5
    while any(t.name == "summary-prefetch" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "summary-prefetch" for t in threading.enumerate())

_CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from config import SummaryConfig
from dataset.format import PreparedDataset
from dataset.qwen3vl_semantic_summary import summarise
summarise(PreparedDataset(sys.argv[1]), SummaryConfig(semantic_summary=True, summary_model=sys.argv[2],
          semantic_summary_batch_size=2, max_new_tokens=8, caption_max_new_tokens=4, summary_threads=1))
"""


def _child(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(tiny_qwen3vl_dir())], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_with_no_lost_or_duplicated_items(tmp_path, tiny_vl):
    n_items = 12  # 6 batches of 2
    killed = make_vl_prepared(tmp_path / "killed", n_items)
    proc = _child(killed.root)
    parts = killed.root / PARTS_DIR
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if len(list(parts.glob(PART_GLOB))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)  # a real process death, possibly in the middle of a write
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"child was not killed mid-run: {proc.stderr.read()[-2000:]}"
    assert not (killed.root / "summaries.parquet").exists()
    parts_at_kill = len(list(parts.glob(PART_GLOB)))
    assert 2 <= parts_at_kill < n_items // 2
    (parts / ".part-000099.parquet.tmp-1").write_bytes(b"half a parquet")  # a write cut off by the kill

    resumed = _child(killed.root)
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read()[-2000:]
    record = json.loads((killed.root / "manifest.json").read_text())["summaries"]
    assert record["counts"]["generated_this_run"] == n_items - 2 * parts_at_kill  # nothing redone
    assert not list(parts.glob(".part-*"))

    reference = make_vl_prepared(tmp_path / "reference", n_items)  # same bytes -> same dataset hash
    summarise(reference, _cfg(semantic_summary_batch_size=2), loaded=tiny_vl)
    got, want = _table(killed), _table(reference)
    assert not got["item_id"].duplicated().any()
    pd.testing.assert_frame_equal(got, want)


def test_missing_and_corrupt_images_are_counted_not_dropped_silently(tmp_path, tiny_vl):
    root = tmp_path / "bad"
    good = write_images(root, 3)
    (root / "images" / "empty.jpg").write_bytes(b"")
    poster = (root / good[0]).read_bytes()
    (root / "images" / "truncated.jpg").write_bytes(poster[: len(poster) // 3])
    (root / "images" / "not_an_image.png").write_text("hello")
    paths = good + ["images/empty.jpg", "images/truncated.jpg", "images/not_an_image.png", "images/gone.jpg", None]
    ds = make_vl_prepared(root, len(paths), image_paths=paths)
    record = summarise(ds, _cfg(semantic_summary_batch_size=2), loaded=tiny_vl)
    c = record["counts"]
    assert c["failed"] == {"missing": 1, "corrupt": 3}
    assert c["skipped_no_image"] == 1 and c["done"] == 3 and c["pending"] == 0
    assert sorted(_table(ds)["item_id"]) == ["i000", "i001", "i002"]


def test_manifest_records_the_run_and_the_content_hash_is_unchanged(tmp_path, tiny_vl):
    ds = make_vl_prepared(tmp_path / "m", 5)
    before = json.loads((ds.root / "manifest.json").read_text())
    record = summarise(ds, _cfg(semantic_summary_batch_size=2, max_items=3), loaded=tiny_vl)
    after = json.loads((ds.root / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "summaries"} == before
    assert PreparedDataset(ds.root).content_hash == ds.content_hash
    assert after["summaries"] == record
    assert record["quantization"] is None and record["items_per_s"] > 0
    assert record["counts"]["done"] == 3 and record["counts"]["pending"] == 2
    assert "who would want it" in record["prompts"]["summary"]
    # a later run without the limit adds the rest, reusing the first three
    record = summarise(ds, _cfg(semantic_summary_batch_size=2), loaded=tiny_vl)
    assert record["counts"]["generated_this_run"] == 2 and record["counts"]["done"] == 5


def test_changed_generation_settings_regenerate_instead_of_mixing(tmp_path, tiny_vl):
    ds = make_vl_prepared(tmp_path / "s", 3)
    summarise(ds, _cfg(semantic_summary_batch_size=3), loaded=tiny_vl)
    record = summarise(ds, _cfg(semantic_summary_batch_size=3, max_new_tokens=5), loaded=tiny_vl)
    assert record["counts"]["generated_this_run"] == 3


def test_summaries_written_for_another_dataset_are_refused(tmp_path, tiny_vl):
    ds = make_vl_prepared(tmp_path / "a", 2)
    summarise(ds, _cfg(semantic_summary_batch_size=2), loaded=tiny_vl)
    other = make_vl_prepared(tmp_path / "b", 3)
    (other.root / "summaries.parquet").write_bytes((ds.root / "summaries.parquet").read_bytes())
    with pytest.raises(SummaryMismatchError, match="another dataset"):
        read_summaries(other)


def test_dataset_without_images_is_a_clear_error(tmp_path):
    ds = make_vl_prepared(tmp_path / "none", 2, image_paths=[None, None])
    with pytest.raises(ValueError, match="no item images"):
        summarise(ds, _cfg())


@pytest.mark.parametrize("argv, on, quant", [
    ([], False, None),
    (["--use_quantization"], True, True),
    (["--no_quantization"], True, False),
    (["--semantic_summary"], True, None),
    (["--max_items", "5"], True, None),
    (["--use_quantization", "--no-semantic_summary"], False, True),
])
def test_prepare_flags_that_turn_the_summary_stage_on(argv, on, quant):
    _, _, summary = config.parse_prepare_args(argv)
    assert summary.semantic_summary is on and summary.use_quantization is quant


def test_summary_config_rejects_bad_values():
    with pytest.raises(ValueError, match="semantic_summary_batch_size"):
        SummaryConfig(semantic_summary_batch_size=0)
    with pytest.raises(ValueError, match="summary_quant"):
        SummaryConfig(summary_quant="fp4")


def test_data_prepare_runs_the_stage_on_the_sample_dataset(tmp_path):
    import data_prepare

    out = tmp_path / "sample"
    argv = ["--dataset", "sample", "--sample_users", "30", "--sample_items", "20", "--min_uc", "3", "--min_sc", "1",
            "--retriever", "none", "--output_dir", str(out), "--summary_model", str(tiny_qwen3vl_dir()),
            "--max_items", "4", "--semantic_summary_batch_size", "4", "--max_new_tokens", "4",
            "--caption_max_new_tokens", "2", "--summary_threads", "1"]
    assert data_prepare.main(argv) == 0
    ds = PreparedDataset(out)
    assert ds.manifest["summaries"]["counts"]["done"] == 4
    assert len(read_summaries(ds)) == 4
