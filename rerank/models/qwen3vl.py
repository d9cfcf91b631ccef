"""Qwen3-VL scoring backend: the same verbalizer as the text models, with item images as image inputs.

Modes ``caption`` and ``semantic_summary`` send text-only prompts through the VL model; ``raw_image`` prompts
carry one image placeholder per shown image, which the processor expands to that image's patch tokens. The
model computes its multimodal rotary positions from the attention mask itself, so left padding is safe.
Loading (bf16, or NF4/int8 via bitsandbytes; torchvision-free processor) is ``qwen3vl_loading``'s job
(``unsloth_backend.load_qwen3vl_unsloth`` with ``use_unsloth``, CUDA only).

Speed: the last position is projected onto the label rows of the LM head only (``label_head``); image
decoding + processing of the next batch can run on a worker thread while the current batch's forward runs
(``prefetch(next_prompts)``; scores are identical either way).
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import torch
from PIL import Image

from rerank.models.accel import attention_implementation, compile_in_place, to_device
from rerank.models.base import Backend, ModelOptions, register_backend
from rerank.models.label_head import dense_label_head, label_logits
from rerank.models.llm import pick_device
from rerank.models.qwen3vl_loading import DEFAULT_VL_MODEL, load_qwen3vl, quantization_of

log = logging.getLogger(__name__)


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@dataclass
class Qwen3VLBackend(ModelOptions, Backend):
    """Qwen3-VL via transformers (or Unsloth on CUDA).

    Args:
        model_name: hub id or local folder (default unsloth/Qwen3-VL-2B-Instruct).
        use_unsloth: load through Unsloth FastVisionModel 4-bit (CUDA only; see rerank.models.select).
        (device, dtype, quantisation and speed options: rerank.models.base.ModelOptions; use_quantization
        without quantization means NF4; use_torch_compile compiles the language model, not the vision tower,
        whose patch counts vary per image)
    """

    model_name: str = DEFAULT_VL_MODEL
    use_unsloth: bool = False
    name: str = "qwen3vl"

    def load(self) -> "Qwen3VLBackend":
        if self.use_unsloth:
            from rerank.models.unsloth_backend import load_qwen3vl_unsloth

            self.model, self.processor = load_qwen3vl_unsloth(self.model_name, self.dtype_name)
        else:
            quant = self.quantization if self.quantization not in (None, "", "none") else "nf4"
            use_q = self.use_quantization or self.quantization not in (None, "", "none")
            self.model, self.processor = load_qwen3vl(
                self.model_name, self.device_name, self.dtype_name, use_quantization=use_q, quant=quant,
                attn_implementation=attention_implementation(self.use_flash_attention,
                                                             pick_device(self.device_name)))
        self.tokenizer = self.processor.tokenizer
        self.device = next(self.model.parameters()).device
        if self.use_torch_compile:
            compile_in_place(self.model.model.language_model, self.torch_compile_mode)
        self._image_tokens = lru_cache(maxsize=None)(self._count_image_tokens)
        self._head = dense_label_head(self.model) if self.label_head else None
        self._label_ids: Optional[list[int]] = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vl-prefetch")
        self._pending: dict[tuple[int, ...], Future] = {}  # batch identity -> encode job (at most 2 kept)
        return self

    def _count_image_tokens(self, path: str) -> int:
        """Tokens one image expands to: its patch grid (t*h*w) merged merge_size^2 to one."""
        ip = self.processor.image_processor
        grid = ip(images=[open_rgb(path)], return_tensors="pt")["image_grid_thw"][0]  # (3,) t, h, w
        return int(grid.prod()) // (ip.merge_size ** 2)

    def image_tokens(self, path: str) -> int:
        return self._image_tokens(path)

    def encode(self, prompts: Sequence) -> dict:
        """Host-side work of a batch: decode the images and run the processor (tokens + pixel patches)."""
        images = [open_rgb(p) for pr in prompts for p in pr.images]  # in placeholder order
        enc = self.processor(text=[pr.text for pr in prompts], images=images or None, padding=True,
                             return_tensors="pt")
        return dict(enc)

    def prefetch(self, prompts: Sequence) -> None:
        """Start ``encode(prompts)`` on the worker thread; ``last_logits`` of the same prompts picks it up.

        The batching loop hints the current and the next batch, so the next batch's images decode while the
        current one runs on the model; older hints (e.g. left by an OOM back-off) are dropped.
        """
        key = tuple(map(id, prompts))
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self.encode, list(prompts))
        while len(self._pending) > 2:
            self._pending.pop(next(iter(self._pending))).cancel()

    def _take_encoded(self, prompts: Sequence) -> dict:
        job = self._pending.pop(tuple(map(id, prompts)), None)
        return job.result() if job is not None else self.encode(prompts)  # no hint: encode now

    @torch.inference_mode()
    def last_logits(self, prompts: Sequence) -> torch.Tensor:
        enc = to_device(self._take_encoded(prompts), self.device)
        label_ids = self.label_ids_for(prompts) if self._head is not None else None
        if label_ids is None:
            out = self.model(**enc, logits_to_keep=1, use_cache=False)
            return out.logits[:, -1, :]  # (B, V)
        hidden = self.model.model(**enc, use_cache=False).last_hidden_state  # (B, T, H)
        return label_logits(self._head, hidden[:, -1, :], label_ids)  # (B, V), NaN outside the labels

    def describe(self) -> dict:
        return {
            "backend": "unsloth-vision" if self.use_unsloth else self.name,
            "model": self.model_name,
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "quantization": "unsloth-4bit" if self.use_unsloth else quantization_of(self.model),
            "label_head": "label-rows" if self._head is not None else "full",
            "torch_compile": self.torch_compile_mode if self.use_torch_compile else None,
        }


register_backend("qwen3vl", Qwen3VLBackend)
