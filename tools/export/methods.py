"""Registry of the export formats and PTQ methods the CLI offers; a method is listed only if it works here.

``artifact`` methods write a folder (weights + tokenizer + metadata.json) that ``--model`` loads;
``memory`` methods are applied to a loaded fp32 model (their quantised modules cannot be ``save_pretrained``).
Methods that were tried and do not run on this stack are not registered; tools/README text in the closing
note names each with its error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Method:
    """One export format / PTQ method.

    Args:
        name: CLI name.
        kind: artifact | memory.
        bits: nominal weight bits.
        is_quantized: stored below 16-bit floats.
        package: import name it needs (checked before any work), or None.
        description: one line for ``tools/quantize.py methods``.
    """

    name: str
    kind: str
    bits: int
    is_quantized: bool
    package: Optional[str]
    description: str


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> None:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.kind not in ("artifact", "memory"):
        raise ValueError(f"method kind must be artifact or memory, got {method.kind!r}")
    _REGISTRY[method.name] = method


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def all_methods(kind: Optional[str] = None) -> list[Method]:
    return [m for m in _REGISTRY.values() if kind is None or m.kind == kind]


def parse_methods(spec: str, kind: str) -> list[Method]:
    """'all' or a comma list -> methods of ``kind`` (an unknown or wrong-kind name is an error)."""
    if spec == "all":
        return all_methods(kind)
    out = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        m = get_method(name)
        if m.kind != kind:
            raise ValueError(f"{name!r} is a {m.kind} method; here only {kind} methods fit: "
                             f"{[x.name for x in all_methods(kind)]}")
        out.append(m)
    if not out:
        raise ValueError(f"no methods in {spec!r}")
    return out


for _m in (
    Method("fp16", "artifact", 16, False, None, "merged model saved in float16 (safetensors)"),
    Method("bf16", "artifact", 16, False, None, "merged model saved in bfloat16 (safetensors)"),
    Method("int8", "artifact", 8, True, "bitsandbytes", "bitsandbytes LLM.int8, serialised (loads on CPU and CUDA)"),
    Method("nf4", "artifact", 4, True, "bitsandbytes", "bitsandbytes NF4 + double quant, serialised"),
    Method("gguf-f16", "artifact", 16, False, "gguf", "GGUF F16 (llama.cpp layout, tokenizer in the header)"),
    Method("gguf-q8_0", "artifact", 8, True, "gguf", "GGUF Q8_0"),
    Method("gguf-q4_0", "artifact", 4, True, "gguf", "GGUF Q4_0 (token embedding / tied head in Q8_0)"),
    Method("dynamic-int8", "memory", 8, True, None, "torch.ao quantize_dynamic on every nn.Linear (CPU)"),
    Method("hqq-4bit", "memory", 4, True, "hqq", "HQQ 4-bit, group 64, calibration-free (hqq package)"),
    Method("torchao-int8wo", "memory", 8, True, "torchao", "torchao int8 weight-only"),
    Method("torchao-int8da", "memory", 8, True, "torchao", "torchao int8 weights + dynamic int8 activations"),
):
    register_method(_m)
