"""tools/quantize.py export pipeline on tiny real architectures: merge == base + adapter, every artifact round-
trips through ``--model`` loading (bnb reload, GGUF read back via transformers' ``gguf_file=``), metadata.json is
written and read, and the bad inputs (existing folder, unsupported architecture, disk full) fail cleanly."""
from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from tiny_models import QWEN3_TOKENIZER_FILES, shared_path, tiny_qwen3_dir
from tools.export.atomic import leftover_temp_folders
from tools.export.methods import get_method, parse_methods

TEXTS = ["<|im_start|>user\nWhich movie next? A. Heat B. Toy Story<|im_end|>\n<|im_start|>assistant\n",
         "The user watched Fargo, Alien and Babe; rank the candidates."]
# relative RMS logit error allowed when the artifact is loaded back through --model (tiny random models)
LOAD_TOL = {"fp16": 2e-3, "bf16": 2e-2, "int8": 0.1, "nf4": 0.3, "gguf-f16": 5e-3, "gguf-q8_0": 0.05, "gguf-q4_0": 0.5}


def _shrink(cfg, heads: int, kv: int, head_dim: int):
    cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = 2, 64, 128
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = heads, kv, head_dim
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:2]
    return cfg


def _save(cfg, out: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)
    src = shared_path("models", "qwen3-0.6b")
    for f in QWEN3_TOKENIZER_FILES:
        shutil.copy(src / f, out / f)
    return out


@pytest.fixture(scope="session")
def qwen3_gguf_ready(tmp_path_factory) -> Path:
    """Tiny Qwen3 with head_dim 128: the only head_dim transformers reads qwen3 GGUF files back with."""
    from transformers import AutoConfig

    cfg = _shrink(AutoConfig.from_pretrained(shared_path("models", "qwen3-0.6b")), 2, 1, 128)
    return _save(cfg, tmp_path_factory.mktemp("tiny-qwen3-hd128"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Tiny LlamaForCausalLM (SmolLM2's architecture) with the Qwen tokenizer: exercises the q/k permutation."""
    from transformers import LlamaConfig
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(shared_path("models", "qwen3-0.6b")))
    cfg = _shrink(LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=512), 4, 2, 16)
    return _save(cfg, tmp_path_factory.mktemp("tiny-llama"))


def make_adapter(base: Path, out: Path) -> Path:
    """A peft LoRA adapter with random (non-zero) A and B, so merging really changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


@torch.inference_mode()
def logits(model, tok, texts=TEXTS) -> torch.Tensor:
    return torch.cat([model(**tok(t, return_tensors="pt", add_special_tokens=False)).logits[0].float()
                      for t in texts])  # (sum T, V)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_merge_gives_the_logits_of_base_plus_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.export.merge import merge_adapter

    base = tiny_qwen3_dir()
    adapter = make_adapter(base, tmp_path / "adapter")
    tok = AutoTokenizer.from_pretrained(base)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    merged = merge_adapter(str(base), str(adapter))
    assert not hasattr(merged.model, "peft_config")
    expected = logits(with_adapter, tok)
    torch.testing.assert_close(logits(merged.model, tok), expected, atol=1e-4, rtol=1e-4)
    assert (logits(plain, tok) - expected).abs().max() > 1e-3  # the adapter is not a no-op


@pytest.fixture(scope="module")
def exported(qwen3_gguf_ready, tmp_path_factory):
    """Every artifact format of the tiny Qwen3 + a random LoRA adapter, GGUF files verified on export."""
    from tools.export.exporter import export_all
    from tools.export.merge import merge_adapter

    tmp = tmp_path_factory.mktemp("export")
    adapter = make_adapter(qwen3_gguf_ready, tmp / "adapter")
    out = tmp / "artifacts"
    # no tokenizer in the GGUF headers here (transformers' reader would spend ~15 s per file parsing the 151k
    # vocabulary); the headers are checked on the Llama file below
    rows = export_all(str(qwen3_gguf_ready), out, parse_methods("all", "artifact"), adapter=str(adapter),
                      verify_texts=TEXTS, gguf_tokenizer=False)
    merged = merge_adapter(str(qwen3_gguf_ready), str(adapter))
    return out, rows, merged, adapter


@pytest.mark.parametrize("name", list(LOAD_TOL))
def test_each_artifact_loads_through_model_and_matches_the_merged_model(exported, name, tmp_path, caplog):
    from rerank.models.llm import load_causal_lm, load_tokenizer
    from rerank.models.resolve import resolve_model

    out, _, merged, _ = exported
    caplog.set_level("INFO", logger="rerank.models.resolve")
    source = resolve_model(str(out / name), cache_root=tmp_path)  # the --model path of run_rerank.py
    assert f"method {name}" in caplog.text  # metadata.json was read
    model = load_causal_lm(source, torch.device("cpu"), torch.float32)
    tok = load_tokenizer(source)
    assert rel_err(logits(model, tok), logits(merged.model, merged.tokenizer)) <= LOAD_TOL[name]
    if name in ("int8", "nf4"):  # really stored quantised, and reloaded from its saved quantization_config
        assert json.loads((out / name / "config.json").read_text())["quantization_config"]["quant_method"] == "bitsandbytes"
        assert any(type(m).__module__.startswith("bitsandbytes") for m in model.modules())


def test_metadata_json_describes_each_artifact(exported):
    from tools.export.metadata import read_metadata

    out, rows, _, adapter = exported
    hashes = set()
    for row in rows:
        meta = read_metadata(out / row["method"])
        m = get_method(meta["method"])
        assert meta["bits"] == m.bits and meta["is_quantized"] == m.is_quantized
        assert meta["adapter"] == str(adapter.resolve())
        assert meta["total_bytes"] == sum(p.stat().st_size for p in (out / m.name).rglob("*")
                                          if p.is_file() and p.name != "metadata.json")
        hashes.add(meta["source_sha256"])
        if m.name.startswith("gguf"):
            assert (out / m.name / meta["gguf_file"]).is_file()
            assert meta["eval"]["gguf_readback"]["passed"] is True
    assert len(hashes) == 1  # all made from the same merged weights
    sizes = {r["method"]: r["total_bytes"] for r in rows}
    assert sizes["gguf-q4_0"] < sizes["gguf-q8_0"] < sizes["gguf-f16"]
    assert "| gguf-q4_0 |" in (out / "sizes.md").read_text()


def test_gguf_tensor_types_follow_the_requested_quantisation(exported):
    from gguf import GGUFReader

    out, *_ = exported
    for q, expect in (("f16", {"F16", "F32"}), ("q8_0", {"Q8_0", "F32"}), ("q4_0", {"Q4_0", "Q8_0", "F32"})):
        meta = json.loads((out / f"gguf-{q}" / "metadata.json").read_text())
        reader = GGUFReader(out / f"gguf-{q}" / meta["gguf_file"])
        assert {t.tensor_type.name for t in reader.tensors} == expect


def test_llama_gguf_round_trip_keeps_the_rotary_layout(tiny_llama, tmp_path):
    from tools.export.exporter import export_all
    from tools.export.gguf_verify import REL_TOLERANCE

    from gguf import GGUFReader
    from transformers import AutoTokenizer

    rows = export_all(str(tiny_llama), tmp_path / "out", [get_method("gguf-f16")], verify_texts=TEXTS)
    stats = rows[0]["eval"]["gguf_readback"]
    assert stats["rel_err"] <= REL_TOLERANCE["f16"] and stats["top1_agreement"] == 1.0
    # the tokenizer travels in the header (what llama.cpp reads): BPE vocab, merges, special ids
    reader = GGUFReader(tmp_path / "out" / "gguf-f16" / rows[0]["gguf_file"])
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert field("tokenizer.ggml.model") == "gpt2"
    assert len(field("tokenizer.ggml.tokens")) == len(tok)  # tiny_llama's vocab_size is len(tok)
    assert field("tokenizer.ggml.tokens")[tok.eos_token_id] == tok.eos_token
    assert field("tokenizer.ggml.eos_token_id") == tok.eos_token_id


# ---------------------------------------------------------------- bad input


def test_export_refuses_an_existing_folder_before_any_work(tmp_path):
    from tools.export.exporter import export_all

    (tmp_path / "fp16").mkdir()
    (tmp_path / "fp16" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_all(str(tiny_qwen3_dir()), tmp_path, [get_method("fp16")])
    assert (tmp_path / "fp16" / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_the_folder_whole(tmp_path):
    from tools.export.exporter import export_all

    (tmp_path / "fp16").mkdir()
    (tmp_path / "fp16" / "stale.bin").write_text("old")
    export_all(str(tiny_qwen3_dir()), tmp_path, [get_method("fp16")], overwrite=True)
    assert not (tmp_path / "fp16" / "stale.bin").exists() and (tmp_path / "fp16" / "metadata.json").is_file()
    assert leftover_temp_folders(tmp_path) == []


def test_gguf_export_of_an_architecture_without_gguf_support_is_refused_up_front(tmp_path):
    from transformers import GPT2Config

    from tools.export.compat import IncompatibleMethodError
    from tools.export.exporter import export_all

    model = tmp_path / "gpt2"
    model.mkdir()
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(model)  # config only: nothing else is read
    for f in QWEN3_TOKENIZER_FILES:
        shutil.copy(shared_path("models", "qwen3-0.6b") / f, model / f)
    with pytest.raises(IncompatibleMethodError, match=r"gguf-q8_0: architecture 'gpt2' is not supported"):
        export_all(str(model), tmp_path / "out", [get_method("gguf-q8_0")])
    assert not (tmp_path / "out").exists()


def test_compat_check_names_the_unsupported_pairs():
    from transformers import AutoConfig, Qwen3VLConfig

    from tools.export.compat import IncompatibleMethodError, check_compat, compat_table

    with pytest.raises(IncompatibleMethodError, match="(?s)qwen3_vl.*gguf-q4_0: qwen3_vl: not written as GGUF"):
        check_compat(Qwen3VLConfig(), [get_method("gguf-q4_0")])
    tiny = AutoConfig.from_pretrained(tiny_qwen3_dir())  # head_dim 16: transformers would read it back as 128
    table = compat_table(tiny, [get_method("gguf-f16"), get_method("nf4")])
    assert "head_dim 16" in table["gguf-f16"] and table["nf4"] == "ok"


class _DiskFullAfter(io.BufferedWriter):
    """A real file whose Python-level write() raises ENOSPC once ``limit`` bytes have gone through it."""

    limit = 200_000

    def __init__(self, raw):
        super().__init__(raw)
        self.written = 0

    def write(self, b):
        self.written += len(b)
        if self.written > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)


def test_disk_full_mid_gguf_write_leaves_no_temp_files(qwen3_gguf_ready, tmp_path, monkeypatch):
    import gguf.gguf_writer as gw

    from tools.export.exporter import export_all

    opened = []

    def full_disk_open(path, mode="r", *a, **k):
        assert mode == "wb"
        f = _DiskFullAfter(io.FileIO(path, mode))
        opened.append(f)
        return f

    monkeypatch.setattr(gw, "open", full_disk_open, raising=False)  # the writer's own open() of the .gguf file
    with pytest.raises(OSError) as e:
        export_all(str(qwen3_gguf_ready), tmp_path, [get_method("gguf-f16")], verify_texts=None)
    assert e.value.errno == errno.ENOSPC
    assert opened and opened[0].written > 0  # it failed mid-file, not before writing
    assert not (tmp_path / "gguf-f16").exists()
    assert leftover_temp_folders(tmp_path) == []
    assert not list(tmp_path.rglob("*.gguf"))
