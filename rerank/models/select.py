"""Which backend runs a job: ``--backend auto|unsloth|transformers`` resolved against what this machine has.

``auto`` = Unsloth 4-bit for text models on CUDA when ``unsloth`` imports, else transformers (with the
dtype/quantisation flags). A backend asked for by name that cannot run raises ``BackendUnavailableError``
with the reason: unsloth not installed, or unsloth for a vision model without a GPU (Unsloth's CPU fallback
covers text models only).
"""
from __future__ import annotations

import importlib.util
import logging

import torch

from rerank.models.base import BackendUnavailableError

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "unsloth", "transformers")
UNSLOTH_INSTALL_HINT = "pip install --no-deps -r requirements-unsloth.txt (or: make venv-unsloth)"


def unsloth_installed() -> bool:
    """Whether the package is there, without importing it (importing unsloth patches transformers)."""
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(requested: str, vision: bool, device: torch.device, adapter: bool = False) -> str:
    """'unsloth' or 'transformers' for ``requested`` on ``device``.

    Args:
        requested: auto | unsloth | transformers.
        vision: the job runs a vision-language model (Qwen3-VL).
        device: the resolved device (``rerank.models.llm.pick_device``).
        adapter: a LoRA adapter (--adapter) must be applied; only the transformers backend applies adapters.
    """
    if requested not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {requested!r}; available: {list(BACKEND_CHOICES)}")
    if requested == "transformers":
        return "transformers"
    if requested == "unsloth" and adapter:
        raise BackendUnavailableError(
            "--adapter is applied by the transformers backend only; use --backend transformers (or auto), "
            "with --use_quantization for a 4-bit base"
        )
    if requested == "auto":
        # vision models stay on transformers under auto: Unsloth's vision path is GPU-only and less tested here;
        # so do adapter runs, which only the transformers backend applies
        use = device.type == "cuda" and not vision and not adapter and unsloth_installed()
        log.info("--backend auto -> %s", "unsloth" if use else "transformers")
        return "unsloth" if use else "transformers"
    if not unsloth_installed():
        raise BackendUnavailableError(f"--backend unsloth: the unsloth package is not installed ({UNSLOTH_INSTALL_HINT})")
    if vision and device.type != "cuda":
        raise BackendUnavailableError(
            f"--backend unsloth for a vision model needs a CUDA GPU (device here: {device}); Unsloth's CPU "
            f"fallback covers text models only. Use --backend transformers (optionally --quantization nf4)"
        )
    return "unsloth"
