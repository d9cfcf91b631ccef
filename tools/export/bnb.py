"""bitsandbytes INT8 (LLM.int8) and NF4 (double quant) checkpoints, serialised with their quantization_config.

The saved folder loads with a plain ``from_pretrained(folder)`` (transformers reads the quantization_config
from config.json), so ``run_rerank.py --model FOLDER`` works without ``--use_quantization``. bitsandbytes 0.50
runs both kinds on CPU.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

BNB_KINDS = ("int8", "nf4")


def bnb_config(kind: str, compute_dtype: torch.dtype = torch.float32):
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if kind == "nf4":
        from rerank.models.llm import nf4_config

        return nf4_config(compute_dtype)  # the same NF4 + double quant the loader uses for --use_quantization
    raise ValueError(f"unknown bitsandbytes kind {kind!r}; available: {list(BNB_KINDS)}")


def save_bnb(fp32_folder: Path, tokenizer, out: Path, kind: str) -> None:
    """Quantise the checkpoint in ``fp32_folder`` with bitsandbytes and save it (weights + config + tokenizer).

    Args:
        fp32_folder: a full-precision HF folder (the merged model).
        tokenizer: saved next to the weights.
        out: destination folder (an atomic_folder temp folder).
        kind: int8 | nf4.
    """
    import bitsandbytes  # noqa: F401  (fail here with a clear ImportError, not inside transformers)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fp32_folder, quantization_config=bnb_config(kind),
                                                 dtype=torch.float32, device_map={"": "cpu"})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("saved bitsandbytes %s checkpoint", kind)
