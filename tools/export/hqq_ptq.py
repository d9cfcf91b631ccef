"""HQQ (half-quadratic quantisation, calibration-free) through the ``hqq`` package, applied in memory.

transformers 5.17's ``HqqConfig`` path raises ``NotImplementedError: QuantizationMethod.HQQ is not available yet
and will be supported soon``, so the model is quantised with hqq's own ``AutoHQQHFModel.quantize_model`` after
a normal fp32 load. The quantised layers run on CPU with hqq's PyTorch backend (dequantise-then-matmul), so
HQQ saves memory, not time, on CPU.
"""
from __future__ import annotations

import copy
import logging

import torch

log = logging.getLogger(__name__)


def quantize_hqq(model: torch.nn.Module, nbits: int = 4, group_size: int = 64, inplace: bool = False):
    """HQQ-quantise every linear layer except the LM head.

    Args:
        model: an fp32 causal LM on CPU.
        nbits: 8, 4, 3, 2 or 1.
        group_size: weights per scale/zero group (must divide the input features).
        inplace: modify ``model`` instead of a deep copy.
    """
    try:
        from hqq.core.quantize import BaseQuantizeConfig
        from hqq.models.hf.base import AutoHQQHFModel
    except ImportError as e:
        raise ImportError(f"HQQ needs the hqq package (pip install hqq): {e}") from e
    if not inplace:
        model = copy.deepcopy(model)
    AutoHQQHFModel.quantize_model(model, quant_config=BaseQuantizeConfig(nbits=nbits, group_size=group_size),
                                  compute_dtype=torch.float32, device="cpu")
    log.info("HQQ %d-bit, group %d", nbits, group_size)
    return model.eval()
