"""In-memory PTQ methods (dynamic INT8, HQQ, torchao), ranking-agreement measures against hand-computed values,
the report chart, and ``tools/quantize.py report`` end to end on ML-100k with a tiny Qwen3."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from tiny_models import tiny_qwen3_dir
from tools.export.agreement import agreement, kendall_tau_b
from tools.export.methods import all_methods, get_method, parse_methods


def test_kendall_tau_b_matches_hand_computed_values():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant of 3
    # a tie in x: 2 untied pairs in x, 3 in y, both concordant -> 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_agreement_counts_top1_and_averages_tau_per_user():
    cands = [["a", "b", "c"], ["d", "e", "f"]]
    ref = pd.DataFrame({"user_id": ["u1", "u2"], "candidates": cands, "scores": [[3, 2, 1], [1, 2, 3]]})
    other = pd.DataFrame({"user_id": ["u2", "u1"], "candidates": cands[::-1], "scores": [[1, 3, 2], [3, 2, 1]]})
    got = agreement(ref, other)
    assert got["top1_agreement"] == 0.5  # u1 same top item, u2 not
    assert got["kendall_tau"] == pytest.approx((1 + 1 / 3) / 2)


def test_agreement_refuses_runs_over_different_candidates():
    a = pd.DataFrame({"user_id": ["u"], "candidates": [["a", "b"]], "scores": [[1, 2]]})
    b = pd.DataFrame({"user_id": ["u"], "candidates": [["b", "a"]], "scores": [[1, 2]]})
    with pytest.raises(ValueError, match="different candidate lists"):
        agreement(a, b)


def test_memory_methods_quantise_and_stay_close_to_fp32():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.export.ptq import apply_method, evaluate_methods

    path = tiny_qwen3_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    texts = ["History: Heat; Fargo. Candidates: A. Alien B. Babe. Answer:", "Rank the next movies for this user."]
    methods = all_methods("memory")
    rows = {r["method"]: r for r in evaluate_methods(model, tok, methods, texts)}
    assert set(rows) == {"fp32", "bf16"} | {m.name for m in methods}
    assert rows["fp32"]["rel_rms_err"] == 0.0
    for m in methods:  # random tiny weights: loose bounds, but far from garbage (rel. error 1.0 = unrelated)
        assert 0 < rows[m.name]["rel_rms_err"] < 0.3, (m.name, rows[m.name])
    q = apply_method(model, get_method("dynamic-int8"))
    assert any(type(mod).__module__.startswith("torch.ao.nn.quantized") for mod in q.modules())
    assert all(type(mod) is not torch.nn.Linear for mod in q.modules())  # every Linear replaced
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear  # the source model is left as it was


def test_export_cli_lists_only_working_methods_and_refuses_memory_methods_for_export():
    with pytest.raises(KeyError, match="unknown method 'awq'"):
        get_method("awq")
    with pytest.raises(ValueError, match="memory method"):
        parse_methods("dynamic-int8", "artifact")


def test_bar_chart_writes_a_png(tmp_path):
    from PIL import Image

    from tools.export.chart import bar_chart

    rows = [{"name": "fp32", "size_mb": 500.0, "prompts_per_s": 1.0, "top1_agreement": 1.0, "kendall_tau": 1.0},
            {"name": "dynamic-int8", "size_mb": None, "prompts_per_s": 2.0, "top1_agreement": 0.8,
             "kendall_tau": float("nan")}]
    img = Image.open(bar_chart(rows, tmp_path / "r.png"))
    assert img.format == "PNG" and img.width > 400


def test_report_end_to_end_on_ml100k(tmp_path, ml100k_dir):
    import data_prepare
    from test_quantize import make_adapter
    from tools.export.exporter import export_all
    from tools.quantize import main

    prepared = tmp_path / "ml-100k"
    assert data_prepare.main(["--dataset", "ml-100k", "--data_root", str(ml100k_dir), "--retriever", "popularity",
                              "--top_k", "5", "--output_dir", str(prepared)]) == 0
    model = str(tiny_qwen3_dir())
    adapter = str(make_adapter(tiny_qwen3_dir(), tmp_path / "adapter"))  # random LoRA: changes the ranking
    export_all(model, tmp_path / "exports", [get_method("fp16")], adapter=adapter)
    common = ["--model", model, "--exports", str(tmp_path / "exports"), "--data", str(prepared), "--retriever",
              "popularity", "--max_users", "6", "--max_history", "3", "--max_text_chars", "0"]
    with pytest.raises(ValueError, match="not made from"):  # exports of base+adapter vs a bare-base reference
        main(["report", *common, "--ptq", "none", "--out", str(tmp_path / "wrong")])
    assert main(["report", *common, "--adapter", adapter, "--ptq", "dynamic-int8,torchao-int8wo",
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| fp32 (reference) |" in md and "| fp16 |" in md and "| dynamic-int8 |" in md and "| torchao-int8wo |" in md
    ref_row = next(line for line in md.splitlines() if line.startswith("| fp32 (reference) |"))
    assert ref_row.endswith("| +0.0000 | 1.00 | 1.000 |")  # the reference agrees with itself
    rows = {r["name"]: r for r in json.loads((tmp_path / "rep" / "report.json").read_text())}
    assert rows["fp16"]["kendall_tau"] > 0.9  # fp16 of the merged model vs the merged fp32 reference
    ref = pd.read_parquet(tmp_path / "rep" / "runs" / "fp32" / "predictions.parquet")
    dyn = pd.read_parquet(tmp_path / "rep" / "runs" / "dynamic-int8" / "predictions.parquet")
    assert list(ref["scores"].map(list)) != list(dyn["scores"].map(list))  # the quantised model was the one scored

    # the reference really carries the adapter: the bare base ranks the same candidates differently
    assert main(["report", "--model", model, "--data", str(prepared), "--retriever", "popularity", "--max_users", "6",
                 "--max_history", "3", "--max_text_chars", "0", "--ptq", "none", "--out", str(tmp_path / "base")]) == 0
    base = pd.read_parquet(tmp_path / "base" / "runs" / "fp32" / "predictions.parquet")
    assert list(base["scores"].map(list)) != list(ref["scores"].map(list))
    assert (tmp_path / "rep" / "report.png").stat().st_size > 0
