"""Tiny random models of the REAL architectures, built from ../shared/models configs with the real tokenizers.

The bugs we fear (label ids, padding side, chat template, positions) live in the real classes, so tests use
these rather than fakes. Built once per session into a temp folder and loaded through the users' code path.
"""
from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

QWEN3_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")


def shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(
            f"{p} is missing: the tests need the shared folder beside the repo root ({SHARED})"
        )
    return p


def build_tiny_qwen3(out: Path, seed: int = 0) -> Path:
    """Qwen3ForCausalLM from the real Qwen3-0.6B config, shrunk to 2 layers / hidden 64, real tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src = shared_path("models", "qwen3-0.6b")
    cfg = AutoConfig.from_pretrained(src)
    cfg.num_hidden_layers = 2
    cfg.hidden_size = 64
    cfg.intermediate_size = 128
    cfg.num_attention_heads = 4
    cfg.num_key_value_heads = 2
    cfg.head_dim = 16
    cfg.max_window_layers = 2
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:2]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in QWEN3_TOKENIZER_FILES:
        shutil.copy(src / f, out / f)
    return out


_CACHE: dict[str, Path] = {}


def tiny_qwen3_dir() -> Path:
    """Build the tiny Qwen3 once per test process (module-level cache shared by all test modules)."""
    import tempfile

    if "qwen3" not in _CACHE:
        _CACHE["qwen3"] = build_tiny_qwen3(Path(tempfile.mkdtemp(prefix="tiny-qwen3-")))
    return _CACHE["qwen3"]


def qwen3_tokenizer():
    from rerank.models.llm import load_tokenizer

    return load_tokenizer(str(shared_path("models", "qwen3-0.6b")))
