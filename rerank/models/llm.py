"""Text LLM backend on transformers: fp32/bf16/fp16, or bitsandbytes 4-bit NF4 (double quant) / 8-bit int8.

One forward per batch, no generation: the prompts are left-padded so every prompt's last token sits in the
last column. Only that position is projected, and only onto the label rows of the LM head
(``rerank.models.label_head``; falls back to the model's own head with ``logits_to_keep=1`` where that
shortcut is not exact). Speed options (FlashAttention-2 / SDPA, torch.compile, pinned copies) live in
``rerank.models.accel``; the Unsloth backend (``unsloth_backend``) subclasses this one and only loads
differently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from rerank.models.accel import attention_implementation, compile_body, to_device
from rerank.models.base import Backend, ModelOptions, register_backend
from rerank.models.label_head import dense_label_head, label_logits
from rerank.models.resolve import resolve_model

log = logging.getLogger(__name__)
# torchao (installed for tools/quantize.py) warns at import, via transformers, about its CUDA-only kernels and
# missing triton: noise for scoring, so only its errors are shown.
logging.getLogger("torchao").setLevel(logging.ERROR)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested but CUDA is not available here; use --device cpu or auto")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU matmuls are fastest and exact in fp32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(sorted(table))}")
    return table[dtype]


def nf4_config(compute_dtype: torch.dtype):
    """4-bit NF4 with double quantisation (QLoRA's setting)."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401  (fail here, with the install hint, not deep inside loading)
    except ImportError as e:
        raise ImportError(f"--use_quantization needs bitsandbytes (pip install bitsandbytes): {e}") from e
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def int8_config():
    """LLM.int8 (8-bit weights, fp16 outlier columns) via bitsandbytes."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401  (fail here, with the install hint, not deep inside loading)
    except ImportError as e:
        raise ImportError(f"--quantization int8 needs bitsandbytes (pip install bitsandbytes): {e}") from e
    return BitsAndBytesConfig(load_in_8bit=True)


QUANTIZATIONS = ("nf4", "int8")


def resolve_quantization(use_quantization: bool = False, quantization: Optional[str] = None) -> Optional[str]:
    """'nf4' | 'int8' | None from the two flags: ``--quantization`` wins; ``--use_quantization`` alone is NF4."""
    if quantization in (None, "", "none"):
        return "nf4" if use_quantization else None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; available: {list(QUANTIZATIONS)} or none")
    return quantization


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each prompt's first real token.

    A plain forward numbers positions 0..T-1 regardless of padding. Rotary models (Qwen, Llama) only see
    relative positions, so the shift cancels there, but absolute-position models would score a padded prompt
    differently; passing the same ids ``generate`` uses keeps every architecture exact.
    """
    pos = attention_mask.long().cumsum(-1) - 1  # (B, T)
    return pos.clamp_(min=0)


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(source: str, device: torch.device, dtype: torch.dtype, use_quantization: bool = False,
                   quantization: Optional[str] = None, attn_implementation: Optional[str] = None):
    """The one entry point that turns a resolved model source into an eval-mode causal LM.

    Args:
        source: local folder or hub id (``resolve_model``'s result).
        device / dtype: where and in which (compute) dtype the model runs.
        use_quantization: NF4 (kept for callers of the first version); quantization: nf4 | int8 | None wins.
        attn_implementation: ``attention_implementation``'s choice (None: transformers' default, SDPA).
    """
    from transformers import AutoModelForCausalLM

    quant = resolve_quantization(use_quantization, quantization)
    kwargs: dict = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quant:
        kwargs["quantization_config"] = nf4_config(dtype) if quant == "nf4" else int8_config()
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise OSError(
            f"could not load model {source!r}: {e}\n(no model hub here? pass a local folder with --model, "
            f"or the offline alias smollm2-135m)"
        ) from e
    if not quant:
        model.to(device)
    return model.eval()


@dataclass
class TransformersTextBackend(ModelOptions, Backend):
    """Causal LM via transformers (dense, NF4 or int8).

    Args:
        model_name: hub id, local folder or alias (see rerank.models.resolve).
        pad_to_multiple_of: pad each batch's length up to a multiple (fewer distinct shapes for compile).
        adapter: LoRA adapter folder (rerank.models.adapters), applied after loading.
        (device, dtype, quantisation and speed options: rerank.models.base.ModelOptions)
    """

    model_name: str = "Qwen/Qwen3-0.6B"
    pad_to_multiple_of: Optional[int] = None
    adapter: Optional[str] = None
    name: str = "transformers"

    def load(self) -> "TransformersTextBackend":
        source = resolve_model(self.model_name)
        self.device = pick_device(self.device_name)
        self.dtype = pick_dtype(self.dtype_name, self.device)
        self.tokenizer = load_tokenizer(source)
        self.model = load_causal_lm(source, self.device, self.dtype, self.use_quantization, self.quantization,
                                    attention_implementation(self.use_flash_attention, self.device))
        if self.adapter:
            from rerank.models.adapters import apply_adapter

            self.model = apply_adapter(self.model, self.adapter, base_name=self.model_name)
        self.source = source
        self.prepare_scoring()
        log.info("loaded %s on %s (%s%s)", source, self.device, self.dtype,
                 f", {self.quant}" if self.quant else "")
        return self

    @property
    def quant(self) -> Optional[str]:
        return resolve_quantization(self.use_quantization, self.quantization)

    def prepare_scoring(self) -> None:
        """Pick the head path and (optionally) compile, for the model as it stands now. Call it again after
        replacing ``self.model`` (e.g. after applying an adapter)."""
        self._head = dense_label_head(self.model) if self.label_head else None
        self._label_ids: Optional[list[int]] = None
        body = self.model.get_decoder() if self._head is not None else self.model
        self._forward = compile_body(body, self.torch_compile_mode) if self.use_torch_compile else body

    @torch.inference_mode()
    def last_logits(self, prompts: Sequence) -> torch.Tensor:
        enc = self.tokenizer([p.text for p in prompts], return_tensors="pt", padding=True,
                             add_special_tokens=False, pad_to_multiple_of=self.pad_to_multiple_of)
        enc = to_device({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, self.device)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (B, T) each, left-padded
        label_ids = self.label_ids_for(prompts) if self._head is not None else None
        if label_ids is None:
            body = self.model if self._head is not None else self._forward  # the compiled callable is the model
            out = body(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                       logits_to_keep=1, use_cache=False)
            return out.logits[:, -1, :]  # (B, V)
        hidden = self._forward(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                               use_cache=False).last_hidden_state  # (B, T, H)
        return label_logits(self._head, hidden[:, -1, :], label_ids)  # (B, V), NaN outside the labels

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "source": getattr(self, "source", None),
            "device": str(self.device),
            "dtype": str(getattr(self, "dtype", None)).replace("torch.", ""),
            "quantization": {"nf4": "nf4-double-quant"}.get(self.quant, self.quant),
            "attention": getattr(getattr(self, "model", None), "config", None) and
            getattr(self.model.config, "_attn_implementation", None),
            "torch_compile": self.torch_compile_mode if self.use_torch_compile else None,
            "label_head": "label-rows" if getattr(self, "_head", None) is not None else "full",
        }


register_backend("transformers", TransformersTextBackend)
