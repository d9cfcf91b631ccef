"""Qwen3-VL loading: the torchvision-free processor built from the real files, and the quantised loads.

The image token count is checked against the image processor's patch grid AND by a forward of the tiny
model, which raises when the number of image pad tokens differs from the number of image features.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from rerank.models.qwen3vl_loading import (
    NO_TORCHVISION_NOTICE,
    load_qwen3vl,
    load_vl_processor,
    quantization_of,
    resolve_quantization,
    torchvision_available,
)
from tiny_models import shared_path, tiny_qwen3vl_dir

REAL_VL = shared_path("models", "qwen3-vl-2b-instruct")


@pytest.fixture(autouse=True)
def one_thread():
    # 2 torch threads competing with other processes on a 2-core box ran ~30x slower than 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images():
    rng = np.random.default_rng(0)
    sizes = [(185, 278), (448, 300), (64, 200), (100, 100)]  # (width, height): posters and odd shapes
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _chat(processor, n: int) -> list[str]:
    msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    return [processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)] * n


@pytest.mark.skipif(torchvision_available(), reason="checks the fallback used when torchvision is missing")
def test_processor_without_torchvision_is_image_only_with_one_notice(caplog):
    with caplog.at_level(logging.INFO, logger="rerank.models.qwen3vl_loading"):
        processor = load_vl_processor(str(REAL_VL))
    notices = [r for r in caplog.records if r.getMessage() == NO_TORCHVISION_NOTICE]
    assert len(notices) == 1
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert not hasattr(processor, "video_processor")
    assert processor.tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match="video input is unavailable"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[np.zeros((2, 32, 32, 3))])


def test_image_pad_tokens_match_image_grid_for_each_image_in_a_padded_batch():
    processor = load_vl_processor(str(REAL_VL))
    enc = processor(text=_chat(processor, 4), images=_images(), padding=True, return_tensors="pt")
    merge = processor.image_processor.merge_size
    pads = (enc["input_ids"] == processor.image_token_id).sum(dim=1)  # (B,)
    expected = enc["image_grid_thw"].prod(dim=1) // merge**2  # (B,) t*h*w patches merged merge^2 -> 1 token
    assert pads.tolist() == expected.tolist()
    assert len(set(pads.tolist())) > 1  # different sizes: different token counts, so padding really differs
    assert (enc["attention_mask"][:, -1] == 1).all()  # left padding: every prompt ends in the last column
    # the patch rows the vision tower will read: one row per patch, t*h*w per image
    assert enc["pixel_values"].shape[0] == int(enc["image_grid_thw"].prod(dim=1).sum())


def test_tiny_model_accepts_the_processor_output():
    model, processor = load_qwen3vl(str(tiny_qwen3vl_dir()), device="cpu")
    enc = processor(text=_chat(processor, 4), images=_images(), padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)  # raises if image pad tokens != image features
    assert out.logits.shape[:2] == enc["input_ids"].shape
    assert quantization_of(model) is None


def test_auto_quantization_is_4bit_on_cuda_and_full_precision_on_cpu():
    assert resolve_quantization(None, torch.device("cuda")) == "nf4"
    assert resolve_quantization(None, torch.device("cpu")) is None
    assert resolve_quantization(True, torch.device("cpu"), "int8") == "int8"
    assert resolve_quantization(False, torch.device("cuda")) is None
    with pytest.raises(ValueError, match="unknown quant"):
        resolve_quantization(True, torch.device("cpu"), "fp4")


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_load_keeps_vision_tower_dense_and_generates(quant):
    import bitsandbytes as bnb

    model, processor = load_qwen3vl(str(tiny_qwen3vl_dir()), device="cpu", use_quantization=True, quant=quant)
    assert quantization_of(model) == quant
    qtype = bnb.nn.Linear4bit if quant == "nf4" else bnb.nn.Linear8bitLt
    quantised = [n for n, m in model.named_modules() if isinstance(m, qtype)]
    assert quantised and all(".language_model." in n for n in quantised)
    assert not any("visual" in n for n in quantised)
    enc = processor(text=_chat(processor, 2), images=_images()[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False, temperature=None, top_p=None, top_k=None)
    prompt_len = enc["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 3  # EOS may end it early
