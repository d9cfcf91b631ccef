"""torchao weight-only INT8 and dynamic-activation INT8 (``torchao.quantization.quantize_``), in memory.

INT4 weight-only is not offered: on this CPU build ``Int4WeightOnlyConfig`` fails with ``ImportError: Requires
mslk >= 1.0.0`` (default packing), ``ValueError: Unsupported int4 packing format: opaque`` and
``NotImplementedError: Int4PlainInt32Tensor does not support device 'cpu' yet`` (the other packings).
"""
from __future__ import annotations

import copy
import logging
import warnings

import torch

log = logging.getLogger(__name__)

TORCHAO_KINDS = ("int8wo", "int8da")


def quantize_torchao(model: torch.nn.Module, kind: str, inplace: bool = False) -> torch.nn.Module:
    """Apply torchao quantisation to every nn.Linear.

    Args:
        model: a causal LM on CPU.
        kind: int8wo (int8 weights, float activations) | int8da (int8 weights and dynamic int8 activations).
        inplace: modify ``model`` instead of a deep copy.
    """
    if kind not in TORCHAO_KINDS:
        raise ValueError(f"unknown torchao kind {kind!r}; available: {list(TORCHAO_KINDS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchao warns about CUDA-only kernels it cannot load on CPU
            import torchao.quantization as tq
    except ImportError as e:
        raise ImportError(f"torchao methods need the torchao package (pip install torchao): {e}") from e
    if not inplace:
        model = copy.deepcopy(model)
    config = tq.Int8WeightOnlyConfig() if kind == "int8wo" else tq.Int8DynamicActivationInt8WeightConfig()
    tq.quantize_(model, config)
    log.info("torchao %s applied", kind)
    return model.eval()
