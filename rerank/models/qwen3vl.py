"""Qwen3-VL scoring backend: the same verbalizer as the text models, with item images as image inputs.

Modes ``caption`` and ``semantic_summary`` send text-only prompts through the VL model; ``raw_image`` prompts
carry one image placeholder per shown image, which the processor expands to that image's patch tokens. The
model computes its multimodal rotary positions from the attention mask itself, so left padding is safe.
Loading (bf16, or NF4/int8 via bitsandbytes; torchvision-free processor) is ``qwen3vl_loading``'s job.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import torch
from PIL import Image

from rerank.models.base import Backend, register_backend
from rerank.models.qwen3vl_loading import DEFAULT_VL_MODEL, load_qwen3vl, quantization_of

log = logging.getLogger(__name__)


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@dataclass
class Qwen3VLBackend(Backend):
    """Qwen3-VL via transformers.

    Args:
        model: hub id or local folder (default unsloth/Qwen3-VL-2B-Instruct).
        device: auto | cpu | cuda[:N]; dtype: auto | float32 | bfloat16 | float16.
        use_quantization: True = 4-bit NF4 (double quant) via bitsandbytes; False = full precision.
    """

    model_name: str = DEFAULT_VL_MODEL
    device_name: str = "auto"
    dtype_name: str = "auto"
    use_quantization: bool = False
    name: str = "qwen3vl"

    def load(self) -> "Qwen3VLBackend":
        self.model, self.processor = load_qwen3vl(self.model_name, self.device_name, self.dtype_name,
                                                  use_quantization=self.use_quantization)
        self.tokenizer = self.processor.tokenizer
        self.device = next(self.model.parameters()).device
        self._image_tokens = lru_cache(maxsize=None)(self._count_image_tokens)
        return self

    def _count_image_tokens(self, path: str) -> int:
        """Tokens one image expands to: its patch grid (t*h*w) merged merge_size^2 to one."""
        ip = self.processor.image_processor
        grid = ip(images=[open_rgb(path)], return_tensors="pt")["image_grid_thw"][0]  # (3,) t, h, w
        return int(grid.prod()) // (ip.merge_size ** 2)

    def image_tokens(self, path: str) -> int:
        return self._image_tokens(path)

    @torch.inference_mode()
    def last_logits(self, prompts: Sequence) -> torch.Tensor:
        images = [open_rgb(p) for pr in prompts for p in pr.images]  # in placeholder order
        enc = self.processor(text=[pr.text for pr in prompts], images=images or None, padding=True,
                             return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        out = self.model(**enc, logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, :]  # (B, V)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "quantization": quantization_of(self.model),
        }


register_backend("qwen3vl", Qwen3VLBackend)
