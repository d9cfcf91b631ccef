"""Text LLM backend on transformers: fp32/bf16/fp16, or 4-bit NF4 (bitsandbytes, double quant).

One forward per batch, no generation: the prompts are left-padded so every prompt's last token sits in the
last column, and only that position goes through the LM head (``logits_to_keep=1``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from rerank.models.base import Backend, register_backend
from rerank.models.resolve import resolve_model

log = logging.getLogger(__name__)


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


def load_causal_lm(source: str, device: torch.device, dtype: torch.dtype, use_quantization: bool = False):
    """The one entry point that turns a resolved model source into an eval-mode causal LM."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if use_quantization:
        kwargs["quantization_config"] = nf4_config(dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise OSError(
            f"could not load model {source!r}: {e}\n(no model hub here? pass a local folder with --model, "
            f"or the offline alias smollm2-135m)"
        ) from e
    if not use_quantization:
        model.to(device)
    return model.eval()


@dataclass
class TransformersTextBackend(Backend):
    """Causal LM via transformers (dense or NF4).

    Args:
        model: hub id, local folder or alias (see rerank.models.resolve).
        device: auto | cpu | cuda[:N].
        dtype: auto | float32 | bfloat16 | float16 (auto: bf16 on CUDA, fp32 on CPU).
        use_quantization: 4-bit NF4 with double quantisation via bitsandbytes.
    """

    model_name: str = "Qwen/Qwen3-0.6B"
    device_name: str = "auto"
    dtype_name: str = "auto"
    use_quantization: bool = False
    name: str = "transformers"

    def load(self) -> "TransformersTextBackend":
        source = resolve_model(self.model_name)
        self.device = pick_device(self.device_name)
        self.dtype = pick_dtype(self.dtype_name, self.device)
        self.tokenizer = load_tokenizer(source)
        self.model = load_causal_lm(source, self.device, self.dtype, self.use_quantization)
        self.source = source
        log.info("loaded %s on %s (%s%s)", source, self.device, self.dtype,
                 ", NF4" if self.use_quantization else "")
        return self

    @torch.inference_mode()
    def last_logits(self, prompts: Sequence) -> torch.Tensor:
        texts = [p.text for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].to(self.device, non_blocking=True)  # (B, T)
        mask = enc["attention_mask"].to(self.device, non_blocking=True)  # (B, T)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=left_padded_positions(mask),
            logits_to_keep=1,
            use_cache=False,
        )
        return out.logits[:, -1, :]  # (B, V)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "source": getattr(self, "source", None),
            "device": str(self.device),
            "dtype": str(getattr(self, "dtype", None)).replace("torch.", ""),
            "quantization": "nf4-double-quant" if self.use_quantization else None,
        }


register_backend("transformers", TransformersTextBackend)
