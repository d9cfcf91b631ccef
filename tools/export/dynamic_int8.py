"""Dynamic INT8 post-training quantisation with ``torch.ao.quantization.quantize_dynamic`` (CPU only).

Every ``nn.Linear`` gets int8 weights (per-tensor scale) and quantises its input activations on the fly;
embeddings and norms stay fp32. The LM head is an nn.Linear too (even when tied to the embedding), so the
label logits themselves come out of an int8 matmul: that is where most of the score error comes from.
Nothing is serialised (the quantised modules are not
``save_pretrained``-able); the method is applied after loading.

torch 2.13 marks ``torch.ao.quantization`` eager mode as deprecated in favour of torchao; it still works and
is the one INT8 path with fast CPU kernels (fbgemm) that needs no extra package.
"""
from __future__ import annotations

import copy
import logging
import warnings

import torch

log = logging.getLogger(__name__)


def quantize_dynamic_int8(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """int8 dynamic quantisation of every nn.Linear (weights per-tensor, activations per batch).

    Args:
        model: an fp32 model on CPU.
        inplace: modify ``model`` instead of a deep copy.
    """
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("dynamic INT8 (torch.ao quantize_dynamic) runs on CPU only; load the model with --device cpu")
    if not inplace:
        model = copy.deepcopy(model)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        # quantize_dynamic expects fp32 Linear weights; only cast when needed, because transformers refuses
        # .float() on a model still marked quantised (e.g. one dequantised from GGUF)
        model = model.float()
    with warnings.catch_warnings():
        # the eager-mode API prints a migration notice on every call; the method is documented above
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    log.info("dynamic INT8: %d Linear layers quantised",
             sum(1 for m in q.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__))
    return q.eval()
