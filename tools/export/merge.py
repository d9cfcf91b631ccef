"""Base model (+ LoRA adapter) -> one merged dense model in full precision, loaded through the library's
single loading entry point (``rerank.models.llm.load_causal_lm``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from rerank.models.llm import load_causal_lm, load_tokenizer
from rerank.models.resolve import resolve_model

log = logging.getLogger(__name__)


@dataclass
class MergedModel:
    """A merged fp32 model on CPU with its tokenizer.

    Args:
        model: the transformers causal LM (no peft wrapper left).
        tokenizer: its tokenizer (left padding, pad token set).
        base_model: --model as given.
        source: the resolved folder / hub id.
        adapter: the adapter folder merged in, or None.
    """

    model: torch.nn.Module
    tokenizer: object
    base_model: str
    source: str
    adapter: Optional[str]


def merge_adapter(base_model: str, adapter: Optional[str] = None) -> MergedModel:
    """Load ``base_model`` in fp32 on CPU and fold ``adapter``'s LoRA weights into it.

    fp32 so the merge itself adds no rounding: every export format rounds from the same exact weights.
    The adapter goes through ``rerank.models.adapters.apply_adapter``, which refuses an adapter trained on
    another base.
    """
    source = resolve_model(base_model)
    tok = load_tokenizer(source)
    model = load_causal_lm(source, torch.device("cpu"), torch.float32)
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if qc is not None and str(getattr(method, "value", method)).lower() == "gguf":
        # a folder dequantised from GGUF (e.g. the smollm2-135m alias cache) still carries the GGUF quantisation
        # config, which makes save_pretrained refuse; its weights are dense fp32, so drop the marker
        model.hf_quantizer = None
        model.is_quantized = False
        del model.config.quantization_config
    if adapter:
        from rerank.models.adapters import apply_adapter

        peft_model = apply_adapter(model, adapter, base_name=base_model)
        model = peft_model.merge_and_unload()
        log.info("merged adapter %s into %s", adapter, base_model)
    return MergedModel(model=model.eval(), tokenizer=tok, base_model=base_model, source=source,
                       adapter=str(Path(adapter).resolve()) if adapter else None)


def save_dense(merged: MergedModel, out: Path, dtype: torch.dtype) -> None:
    """save_pretrained in ``dtype`` (weights + config + tokenizer) into ``out``; the fp32 model is untouched."""
    model = merged.model
    if dtype != torch.float32:
        import copy

        model = copy.deepcopy(model).to(dtype)  # 135M fp32 = 0.5 GB: a copy is cheaper than a reload
    model.save_pretrained(out)
    merged.tokenizer.save_pretrained(out)
