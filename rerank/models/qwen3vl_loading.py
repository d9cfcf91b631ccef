"""Loading Qwen3-VL (model + processor): the one entry point shared by the data-prep summariser and the
VL reranker.

- ``load_qwen3vl(model, device, dtype, use_quantization, quant)`` returns ``(model, processor)`` in eval mode.
  ``model`` is a hub id (default ``unsloth/Qwen3-VL-2B-Instruct``) or a local folder in HF layout.
  ``use_quantization=None`` means "auto": 4-bit NF4 on CUDA (the 2B model then fits a consumer GPU and
  summaries/scores do not need full precision), full precision on CPU (bitsandbytes' CPU 4-bit kernels are
  much slower than fp32 matmuls). ``quant`` picks ``nf4`` (double quant, compute in the model dtype: bf16 on
  CUDA, fp32 on CPU) or ``int8`` (LLM.int8). The vision tower and the LM head stay unquantised: they are a
  small share of the weights and image features are what summaries and ``raw_image`` scores depend on.
- ``load_vl_processor(source)``: ``AutoProcessor`` when torchvision is importable; otherwise the same
  ``Qwen3VLProcessor`` assembled from the real processor files with the PIL/numpy image processor
  (``Qwen2VLImageProcessorPil``) and no video processor, announced by one log line. Both put the tokenizer's
  padding on the left, which batched generation and last-position scoring need.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from typing import Optional

import torch

from rerank.models.llm import nf4_config, pick_device, pick_dtype
from rerank.models.resolve import resolve_model

log = logging.getLogger(__name__)

DEFAULT_VL_MODEL = "unsloth/Qwen3-VL-2B-Instruct"
QUANT_KINDS = ("nf4", "int8")
NO_TORCHVISION_NOTICE = "torchvision not installed: using the slow image processor; video input is unavailable"
# kept in the compute dtype under bitsandbytes: transformers matches these as prefixes of module names
UNQUANTISED_MODULES = ["model.visual", "lm_head"]


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def resolve_quantization(use_quantization: Optional[bool], device: torch.device, quant: str = "nf4") -> Optional[str]:
    """The quantisation actually used: 'nf4' | 'int8' | None (None for use_quantization=None on CPU)."""
    if quant not in QUANT_KINDS:
        raise ValueError(f"unknown quant {quant!r}; available: {list(QUANT_KINDS)}")
    if use_quantization is None:
        use_quantization = device.type == "cuda"
    return quant if use_quantization else None


def quantization_config(quant: str, compute_dtype: torch.dtype):
    """BitsAndBytesConfig for ``quant`` with the vision tower and LM head left unquantised."""
    if quant == "nf4":
        cfg = nf4_config(compute_dtype)
    elif quant == "int8":
        try:
            import bitsandbytes  # noqa: F401  (fail here, with the install hint, not deep inside loading)
        except ImportError as e:
            raise ImportError(f"int8 quantisation needs bitsandbytes (pip install bitsandbytes): {e}") from e
        from transformers import BitsAndBytesConfig

        cfg = BitsAndBytesConfig(load_in_8bit=True)
    else:
        raise ValueError(f"unknown quant {quant!r}; available: {list(QUANT_KINDS)}")
    cfg.llm_int8_skip_modules = list(UNQUANTISED_MODULES)
    return cfg


def _read_chat_template(source: str) -> Optional[str]:
    """The processor's chat template from chat_template.jinja / chat_template.json (folder or hub id)."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path is None:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return text if name.endswith(".jinja") else json.loads(text)["chat_template"]
    return None


def _image_only_processor_class():
    """Qwen3VLProcessor without the video attribute (its video processor needs torchvision).

    ``ProcessorMixin`` derives the sub-processor attributes from ``__init__``'s parameters, so a subclass whose
    ``__init__`` has no ``video_processor`` is a complete processor of images and text.
    """
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                             chat_template=chat_template, **kwargs)

        def __call__(self, images=None, text=None, videos=None, **kwargs):
            if videos is not None:
                raise ValueError(f"video input is unavailable: {NO_TORCHVISION_NOTICE.split(':')[0]}")
            return super().__call__(images=images, text=text, **kwargs)

    return Qwen3VLImageOnlyProcessor


def load_vl_processor(source: str):
    """Qwen3-VL processor for a folder or hub id, padding side left (see module docstring)."""
    if torchvision_available():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(source)
    else:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        log.info(NO_TORCHVISION_NOTICE)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        chat_template = _read_chat_template(source) or getattr(tokenizer, "chat_template", None)
        if chat_template is None:
            raise FileNotFoundError(f"{source} has no chat template (chat_template.json / .jinja / tokenizer)")
        processor = _image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                                  chat_template=chat_template)
    processor.tokenizer.padding_side = "left"  # batched generate / last-position scoring need left padding
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def load_qwen3vl(
    model: str = DEFAULT_VL_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    use_quantization: Optional[bool] = None,
    quant: str = "nf4",
    attn_implementation: Optional[str] = None,
):
    """Load a Qwen3-VL checkpoint and its processor; returns ``(model, processor)``, model in eval mode.

    Args:
        model: hub id or local folder (config.json + weights + processor/tokenizer files).
        device: auto | cpu | cuda[:N].
        dtype: auto | float32 | bfloat16 | float16 (auto: bf16 on CUDA, fp32 on CPU); the compute dtype
            under quantisation.
        use_quantization: True / False, or None = 4-bit on CUDA, full precision on CPU.
        quant: nf4 (double quant) or int8, when quantising.
        attn_implementation: e.g. ``rerank.models.accel.attention_implementation``'s choice; None = default.
    """
    from transformers import AutoModelForImageTextToText

    source = resolve_model(model)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    used = resolve_quantization(use_quantization, dev, quant)
    kwargs: dict = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if used:
        kwargs["quantization_config"] = quantization_config(used, torch_dtype)
        kwargs["device_map"] = {"": dev.index or 0} if dev.type == "cuda" else {"": "cpu"}
    try:
        vl_model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    except OSError as e:
        raise OSError(f"could not load Qwen3-VL model {source!r}: {e}\n(offline? pass a local folder)") from e
    if not used:
        vl_model.to(dev)
    processor = load_vl_processor(source)
    log.info("loaded %s on %s (%s%s)", source, dev, torch_dtype, f", {used}" if used else "")
    return vl_model.eval(), processor


def quantization_of(model) -> Optional[str]:
    """'nf4' | 'int8' | None: what a loaded model actually runs with (for manifests and metrics)."""
    q = getattr(model, "hf_quantizer", None)
    if q is None:
        return None
    cfg = q.quantization_config
    if getattr(cfg, "load_in_4bit", False):
        return getattr(cfg, "bnb_4bit_quant_type", "4bit")
    if getattr(cfg, "load_in_8bit", False):
        return "int8"
    return type(cfg).__name__
