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
    return _instantiate_and_save(AutoModelForCausalLM, cfg, seed, out, src, QWEN3_TOKENIZER_FILES)


def _instantiate_and_save(auto_cls, cfg, seed: int, out: Path, src: Path, files) -> Path:
    """Random weights from a fixed seed, saved with the real tokenizer/processor files beside them."""
    import torch

    torch.manual_seed(seed)
    model = auto_cls.from_config(cfg, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in files:
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


QWEN3VL_PROCESSOR_FILES = ("chat_template.json", "preprocessor_config.json", "video_preprocessor_config.json",
                           "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")


def build_tiny_qwen3vl(out: Path, seed: int = 0) -> Path:
    """Qwen3VLForConditionalGeneration from the real Qwen3-VL-2B config, shrunk, with the real processor files.

    Text: 2 layers, hidden 64, 4 heads / 2 kv heads, head_dim 16, mrope_section [4, 2, 2] (sums to
    head_dim / 2 = 8 rotary frequencies; the interleaved H/W slices 1::3 and 2::3 stay below 8).
    Vision: depth 2, hidden 32, 2 heads, deepstack features from blocks [0, 1], projected to the text hidden.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    src = shared_path("models", "qwen3-vl-2b-instruct")
    cfg = AutoConfig.from_pretrained(src)
    t = cfg.text_config
    t.num_hidden_layers = 2
    t.hidden_size = 64
    t.intermediate_size = 128
    t.num_attention_heads = 4
    t.num_key_value_heads = 2
    t.head_dim = 16
    rope = dict(getattr(t, "rope_parameters", None) or {})
    rope["mrope_section"] = [4, 2, 2]
    t.rope_parameters = rope
    v = cfg.vision_config
    v.depth = 2
    v.hidden_size = 32
    v.num_heads = 2
    v.intermediate_size = 64
    v.out_hidden_size = t.hidden_size
    v.deepstack_visual_indexes = [0, 1]
    # The real init (std 0.02) makes a 2-layer model print "\n" for every image; std 0.3 makes greedy text
    # depend on the image, so "batched == one-at-a-time" compares different strings per item.
    t.initializer_range = v.initializer_range = cfg.initializer_range = 0.3
    return _instantiate_and_save(AutoModelForImageTextToText, cfg, seed, out, src, QWEN3VL_PROCESSOR_FILES)


def tiny_qwen3vl_dir() -> Path:
    """Build the tiny Qwen3-VL once per test process (module-level cache shared by all test modules)."""
    import tempfile

    if "qwen3vl" not in _CACHE:
        _CACHE["qwen3vl"] = build_tiny_qwen3vl(Path(tempfile.mkdtemp(prefix="tiny-qwen3vl-")))
    return _CACHE["qwen3vl"]
