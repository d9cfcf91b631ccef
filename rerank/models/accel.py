"""Runtime speed options shared by the text and VL loaders: attention kernel, torch.compile, host→device copies.

- ``attention_implementation(use_flash_attention, device)``: ``flash_attention_2`` when asked for and the
  ``flash_attn`` package imports on a CUDA device; otherwise PyTorch SDPA, announced by one log line (a missing
  flash-attn is a slower run, not an error: SDPA already uses fused flash/memory-efficient kernels on CUDA).
- ``compile_body(module, mode)``: ``torch.compile`` of the decoder body (no LM head: the label head reads only
  26 rows of it). Returned as a separate callable so the loaded model object stays untouched (adapters and
  export code keep seeing plain ``nn.Module``s).
- ``to_device(tensors, device)``: pinned memory + ``non_blocking`` copies on CUDA, so the next batch's
  tokenisation on the host overlaps the previous batch's kernels; plain copies elsewhere.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Callable, Mapping, Optional

import torch

log = logging.getLogger(__name__)

FLASH_MISSING_NOTICE = ("--use_flash_attention: flash_attn is not installed (or no CUDA device); "
                        "using PyTorch SDPA attention instead")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_notices: set[str] = set()


def notice_once(message: str) -> None:
    """Log ``message`` at INFO the first time only (one notice per process, not one per batch or model)."""
    if message not in _notices:
        _notices.add(message)
        log.warning(message)


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def attention_implementation(use_flash_attention: bool, device: torch.device) -> Optional[str]:
    """The ``attn_implementation`` to pass to ``from_pretrained`` (None = transformers' default, SDPA)."""
    if not use_flash_attention:
        return None
    if device.type == "cuda" and flash_attn_available():
        return "flash_attention_2"
    notice_once(FLASH_MISSING_NOTICE)
    return "sdpa"


def _compile_kwargs(mode: str) -> dict:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown torch compile mode {mode!r}; available: {list(COMPILE_MODES)}")
    return {"mode": None if mode == "default" else mode, "dynamic": True}


def compile_body(module: torch.nn.Module, mode: str = "default") -> Callable:
    """``torch.compile`` with dynamic shapes: batch size and padded length vary from batch to batch, and a
    static-shape compile would recompile for every new (B, T)."""
    return torch.compile(module, **_compile_kwargs(mode))


def compile_in_place(module: torch.nn.Module, mode: str = "default") -> None:
    """``compile_body`` for a submodule that its parent calls itself (Qwen3-VL's language model):
    ``nn.Module.compile`` swaps the module's call for the compiled one, so no caller changes."""
    module.compile(**_compile_kwargs(mode))


def to_device(tensors: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device``; on CUDA through pinned host memory with non-blocking copies."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}
