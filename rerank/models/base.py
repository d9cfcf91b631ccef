"""The small interface every scoring backend implements, and its explicit registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch


class Backend(ABC):
    """A loaded model that maps a batch of rendered prompts to last-position logits.

    Subclasses set ``tokenizer`` and ``device`` in ``load`` and implement ``last_logits``.
    """

    name: str = "base"
    tokenizer = None
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def load(self) -> "Backend": ...

    @abstractmethod
    def last_logits(self, prompts: Sequence) -> torch.Tensor:
        """(B, V) next-token logits after each prompt (``rerank.prompts.Prompt``: text, and images for VL
        backends), as one left-padded batch: one forward, no generation."""

    def prefetch(self, prompts: Sequence) -> None:
        """Hint: ``prompts`` are the next batch. Backends with costly host-side preparation (image decoding)
        start it on a worker thread; the default does nothing. Results never depend on it."""

    def describe(self) -> dict:
        return {"backend": self.name}

    _label_ids: Optional[list[int]] = None  # resolved lazily; backends reset it when the model changes

    def label_ids_for(self, prompts: Sequence) -> Optional[list[int]]:
        """The label token ids, resolved once with the verbalizer's check against a real prompt's ending
        (None: the prompt ending does not take single-token labels, so the full LM head is used)."""
        if self._label_ids is None:
            from rerank.prompts import LABELS
            from rerank.verbalizer import LabelTokenError, resolve_label_ids

            try:
                self._label_ids = resolve_label_ids(self.tokenizer, LABELS, prompts[0].text)
            except LabelTokenError:
                self._label_ids = []
        return self._label_ids or None


@dataclass
class ModelOptions:
    """Loading and speed options shared by the text and the VL transformers backends (keyword-only use).

    Args:
        device_name: auto | cpu | cuda[:N].
        dtype_name: auto | float32 | bfloat16 | float16 (auto: bf16 on CUDA, fp32 on CPU).
        use_quantization: 4-bit NF4 with double quantisation via bitsandbytes.
        quantization: nf4 | int8 | None; overrides use_quantization when set.
        use_flash_attention: FlashAttention-2 when flash_attn imports, else SDPA with one notice.
        use_torch_compile: torch.compile the decoder (first batches of each new shape compile).
        torch_compile_mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs.
        label_head: project only the label rows of the LM head (exact; off = the model's full head).
    """

    device_name: str = "auto"
    dtype_name: str = "auto"
    use_quantization: bool = False
    quantization: Optional[str] = None
    use_flash_attention: bool = False
    use_torch_compile: bool = False
    torch_compile_mode: str = "default"
    label_head: bool = True


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here (package missing, needs a GPU, ...)."""


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``factory`` available as ``get_backend(name)``; registering a name twice raises ValueError."""
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Callable[..., Backend]:
    """The factory registered as ``name``; KeyError naming the registered backends otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; available: {sorted(_REGISTRY)}") from None
