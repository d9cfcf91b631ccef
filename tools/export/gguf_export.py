"""GGUF F16 / Q8_0 / Q4_0 files written with the ``gguf`` package (llama.cpp's own gguf-py).

Tensor names come from gguf's ``TensorNameMap`` for the architecture, so the file follows llama.cpp's layout;
hyper-parameters and the tokenizer (BPE vocab, merges, token types, special ids, chat template) go into the
header, which makes the file self-contained for llama.cpp. Llama's q/k projections are stored in llama.cpp's
interleaved rotary order (the permutation ``convert_hf_to_gguf.py`` applies; transformers undoes it on load);
Qwen3 stores them unpermuted, as llama.cpp's converter does.

Quantisation (numpy, ``gguf.quants``): 1-D tensors (norms) stay F32, as llama.cpp keeps them. Q8_0 and Q4_0
quantise every 2-D weight whose rows split into 32-value blocks; in Q4_0 the token embedding (also the LM head
when tied) is stored Q8_0, mirroring llama.cpp's habit of keeping the output tensor at higher precision —
the label logits are read straight from it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GGUF_TYPES = ("f16", "q8_0", "q4_0")
# HF model_type -> (gguf MODEL_ARCH member name, permute q/k like llama.cpp, tokenizer.ggml.pre)
GGUF_ARCHS = {
    "llama": ("LLAMA", True, "smollm"),
    "qwen3": ("QWEN3", False, "qwen2"),
}


class GGUFArchitectureError(ValueError):
    pass


def gguf_arch(model_type: str):
    """gguf's MODEL_ARCH for an HF model_type, or GGUFArchitectureError naming what is supported."""
    import gguf

    if model_type not in GGUF_ARCHS:
        raise GGUFArchitectureError(
            f"GGUF export: architecture {model_type!r} is not supported; supported: {sorted(GGUF_ARCHS)} "
            f"(the gguf {gguf.__version__ if hasattr(gguf, '__version__') else ''} tensor-name maps we write "
            f"and transformers' GGUF loader reads back)"
        )
    arch = getattr(gguf.MODEL_ARCH, GGUF_ARCHS[model_type][0], None)
    if arch is None:
        raise GGUFArchitectureError(f"the installed gguf package has no MODEL_ARCH.{GGUF_ARCHS[model_type][0]}")
    return arch


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None))
    if theta is None:
        raise GGUFArchitectureError(f"{cfg.model_type}: no rope_theta in the config")
    return float(theta)


def check_gguf_config(cfg) -> None:
    """Refuse configs the writer would encode wrongly (checked before any weights are touched)."""
    gguf_arch(cfg.model_type)
    rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        raise GGUFArchitectureError(f"GGUF export: rope_type {rope_type!r} (rope scaling) is not written; "
                                    f"only default RoPE is supported")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if cfg.model_type == "qwen3":
        from transformers import Qwen3Config

        default = Qwen3Config().head_dim
        if head_dim != default:
            # transformers' qwen3 GGUF mapping reads no attention.key_length, so the model it rebuilds has
            # Qwen3Config's default head_dim: the file (valid for llama.cpp) could not be read back and verified
            raise GGUFArchitectureError(
                f"GGUF export of qwen3 with head_dim {head_dim}: transformers {_tf_version()} reads qwen3 GGUF "
                f"files back with head_dim {default} (its mapping ignores attention.key_length), so this file "
                f"could not be verified; every released Qwen3 uses {default}"
            )


def _tf_version() -> str:
    import transformers

    return transformers.__version__


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation: half-split rotary pairs -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_type(gguf, name: str, arr: np.ndarray, qtype: str):
    """GGML type for one tensor of a ``qtype`` file (see the module docstring)."""
    Q = gguf.GGMLQuantizationType
    if arr.ndim < 2:
        return Q.F32
    if qtype == "f16":
        return Q.F16
    if arr.shape[-1] % 32:
        return Q.F16  # rows do not split into 32-value blocks
    if qtype == "q4_0" and name.startswith("token_embd"):
        return Q.Q8_0
    return {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[qtype]


def _add_tokenizer(w, tokenizer, vocab_size: int, pre: str) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    added = {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding can be larger than the tokenizer: pad like llama.cpp
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(tok)
            types.append(gguf.TokenType.CONTROL if i in special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise GGUFArchitectureError(f"GGUF export writes BPE (gpt2-style) tokenizers; this one is {model.get('type')}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_merges(merges)
    for setter, tid in ((w.add_bos_token_id, tokenizer.bos_token_id), (w.add_eos_token_id, tokenizer.eos_token_id),
                        (w.add_pad_token_id, tokenizer.pad_token_id), (w.add_unk_token_id, tokenizer.unk_token_id)):
        if tid is not None:
            setter(int(tid))
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)


def write_gguf(model, tokenizer, path: Path, qtype: str, name: str = "model", with_tokenizer: bool = True) -> dict:
    """Write ``model`` (a dense HF causal LM) as a GGUF file; returns {tensor types: count}.

    Args:
        model: LlamaForCausalLM / Qwen3ForCausalLM (any float dtype; read as fp32).
        tokenizer: its (fast, BPE) tokenizer.
        path: the .gguf file to write.
        qtype: f16 | q8_0 | q4_0.
        name: general.name.
        with_tokenizer: write the tokenizer fields (llama.cpp needs them; transformers' reader, which parses
            every vocab/merge string in Python, takes ~15 s more on a 151k vocabulary).
    """
    import gguf
    from gguf import quants

    if qtype not in GGUF_TYPES:
        raise ValueError(f"unknown GGUF type {qtype!r}; available: {list(GGUF_TYPES)}")
    cfg = model.config
    check_gguf_config(cfg)
    arch = gguf_arch(cfg.model_type)
    _, permute, pre = GGUF_ARCHS[cfg.model_type]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_layers = cfg.num_hidden_layers
    name_map = gguf.get_tensor_name_map(arch, n_layers)

    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(name)
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(n_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(cfg.num_attention_heads))
    w.add_head_count_kv(int(cfg.num_key_value_heads))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_rope_dimension_count(int(head_dim))
    w.add_key_length(int(head_dim))
    w.add_value_length(int(head_dim))
    w.add_vocab_size(int(cfg.vocab_size))
    w.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                     "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if with_tokenizer:
        _add_tokenizer(w, tokenizer, int(cfg.vocab_size), pre)

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    counts: dict[str, int] = {}
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # no output.weight: readers (llama.cpp, transformers) tie it to token_embd
        base, _, suffix = hf_name.rpartition(".")
        gname = name_map.get_name(base)
        if gname is None:
            raise GGUFArchitectureError(f"GGUF export: tensor {hf_name!r} has no name in gguf's "
                                        f"{gguf.MODEL_ARCH_NAMES[arch]} map")
        arr = t.detach().float().cpu().numpy()
        if permute and base.endswith("self_attn.q_proj"):
            arr = _permute_qk(arr, cfg.num_attention_heads)
        elif permute and base.endswith("self_attn.k_proj"):
            arr = _permute_qk(arr, cfg.num_key_value_heads)
        full = f"{gname}.{suffix}"
        ttype = _tensor_type(gguf, full, arr, qtype)
        if ttype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(full, arr.astype(np.float32))
        elif ttype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(full, arr.astype(np.float16))
        else:
            w.add_tensor(full, quants.quantize(arr, ttype), raw_dtype=ttype)  # shape from the byte shape
        counts[ttype.name] = counts.get(ttype.name, 0) + 1

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    log.info("wrote %s (%s): %s", path, qtype, counts)
    return counts
