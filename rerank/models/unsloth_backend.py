"""Unsloth backends: ``FastLanguageModel`` 4-bit for text models, ``FastVisionModel`` 4-bit for Qwen3-VL (GPU).

Only loading differs from the transformers backends: scoring (left padding, label-rows head, compile) is
inherited, so a score means the same thing whichever backend produced it. ``unsloth`` is imported inside
``load`` only: importing it patches transformers process-wide, which must not happen to runs that did not ask
for it. ``UNSLOTH_RETURN_LOGITS=1`` is set before the import because Unsloth's patched causal-LM forward may
otherwise return empty logits (it skips the LM head to save memory when it expects a training loss).

Unsloth 2026.10.9 falls back to CPU for text models (a plain transformers model with bitsandbytes 4-bit
layers); its vision path needs CUDA, which ``rerank.models.select.choose_backend`` checks first.
Install: ``pip install --no-deps -r requirements-unsloth.txt`` (``make venv-unsloth``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from rerank.models.base import BackendUnavailableError, register_backend
from rerank.models.llm import TransformersTextBackend, pick_device, pick_dtype
from rerank.models.resolve import resolve_model
from rerank.models.select import UNSLOTH_INSTALL_HINT

log = logging.getLogger(__name__)


def import_unsloth():
    """The ``unsloth`` module, imported with logits on; BackendUnavailableError when it cannot import."""
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    try:
        import unsloth
    except ImportError as e:
        raise BackendUnavailableError(f"--backend unsloth: unsloth does not import here: {e} "
                                      f"({UNSLOTH_INSTALL_HINT})") from e
    except (NotImplementedError, RuntimeError) as e:  # e.g. releases that refuse to run without a GPU
        raise BackendUnavailableError(f"--backend unsloth: unsloth refused to start here: {e}") from e
    return unsloth


@dataclass
class UnslothTextBackend(TransformersTextBackend):
    """Text causal LM through Unsloth ``FastLanguageModel`` in 4-bit (``for_inference`` mode).

    Args:
        model_name: hub id, local folder or alias (see rerank.models.resolve).
        device_name: auto | cpu | cuda[:N] (Unsloth places the model itself: CUDA when present, else CPU).
        dtype_name: auto (Unsloth picks bf16/fp16) | float32 | bfloat16 | float16.
        max_seq_length: longest prompt Unsloth prepares rotary caches for.
        (the speed options of TransformersTextBackend apply unchanged; quantization is always 4-bit)
    """

    max_seq_length: int = 4096
    name: str = "unsloth"

    def load(self) -> "UnslothTextBackend":
        import_unsloth()
        from unsloth import FastLanguageModel

        source = resolve_model(self.model_name)
        self.device = pick_device(self.device_name)
        dtype = None if self.dtype_name == "auto" else pick_dtype(self.dtype_name, self.device)
        # Unsloth chooses its own attention kernels; --use_flash_attention does not apply here
        model, tokenizer = FastLanguageModel.from_pretrained(
            source, max_seq_length=self.max_seq_length, dtype=dtype, load_in_4bit=True)
        FastLanguageModel.for_inference(model)
        tokenizer.padding_side = "left"  # last-position scoring needs every prompt's end in the last column
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.model, self.source = tokenizer, model, source
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        self.prepare_scoring()
        log.info("loaded %s with Unsloth 4-bit on %s (%s)", source, self.device, self.dtype)
        return self

    @property
    def quant(self):
        return "unsloth-4bit"


def load_qwen3vl_unsloth(model: str, dtype: str = "auto", max_seq_length: int = 8192):
    """Qwen3-VL through Unsloth ``FastVisionModel`` 4-bit on CUDA; returns ``(model, processor)``.

    The processor is ours (``load_vl_processor``: left padding, works without torchvision), so prompts and
    image tokens are identical to the transformers backend's.
    """
    from rerank.models.qwen3vl_loading import load_vl_processor

    import_unsloth()
    from unsloth import FastVisionModel

    source = resolve_model(model)
    torch_dtype = None if dtype == "auto" else pick_dtype(dtype, pick_device("cuda"))
    vl_model, _ = FastVisionModel.from_pretrained(source, load_in_4bit=True, dtype=torch_dtype,
                                                  max_seq_length=max_seq_length)
    FastVisionModel.for_inference(vl_model)
    return vl_model.eval(), load_vl_processor(source)


register_backend("unsloth", UnslothTextBackend)
