"""Which architecture supports which method — answered from config.json alone, before any weights load.

Architectures: Llama (SmolLM2), Qwen3 (text), Qwen3-VL. Everything else is refused with the list of supported
ones, so a long export never dies half-way on an unsupported layer.
"""
from __future__ import annotations

import importlib.util
from typing import Iterable

from tools.export.methods import Method

TEXT_ARCHS = ("llama", "qwen3")
HQQ_GROUP = 64


class IncompatibleMethodError(ValueError):
    pass


def _reason(cfg, method: Method) -> str | None:
    """None when ``method`` can run on ``cfg``'s architecture, else why not."""
    mt = getattr(cfg, "model_type", None)
    if mt == "qwen3_vl":
        if method.name.startswith("gguf"):
            return ("qwen3_vl: not written as GGUF (llama.cpp keeps the vision tower in a separate mmproj file "
                    "and transformers' GGUF loader has no qwen3_vl), use nf4/int8 at load time instead")
        return ("qwen3_vl: the export pipeline loads text causal LMs (AutoModelForCausalLM); Qwen3-VL is "
                "quantised at load time by rerank/models/qwen3vl_loading.py (run_rerank.py --use_quantization)")
    if mt not in TEXT_ARCHS:
        return f"architecture {mt!r} is not supported by tools/quantize.py; supported: {list(TEXT_ARCHS) + ['qwen3_vl (partly)']}"
    if method.name.startswith("gguf"):
        from tools.export.gguf_export import GGUFArchitectureError, check_gguf_config

        try:
            check_gguf_config(cfg)
        except GGUFArchitectureError as e:
            return str(e)
    if method.name == "hqq-4bit":
        bad = [n for n in ("hidden_size", "intermediate_size") if getattr(cfg, n) % HQQ_GROUP]
        if bad:
            return f"hqq-4bit: group size {HQQ_GROUP} does not divide {', '.join(f'{n}={getattr(cfg, n)}' for n in bad)}"
    if method.package and importlib.util.find_spec(method.package) is None:
        return f"{method.name} needs the package {method.package!r} (pip install {method.package})"
    return None


def check_compat(cfg, methods: Iterable[Method]) -> None:
    """Raise IncompatibleMethodError listing every (architecture, method) pair that cannot run."""
    problems = [f"{m.name}: {r}" for m in methods if (r := _reason(cfg, m))]
    if problems:
        raise IncompatibleMethodError(
            f"{getattr(cfg, 'model_type', '?')} model cannot be exported / quantised with:\n  " + "\n  ".join(problems)
        )


def compat_table(cfg, methods: Iterable[Method]) -> dict[str, str]:
    """method -> 'ok' or the reason (for ``tools/quantize.py check``)."""
    return {m.name: (_reason(cfg, m) or "ok") for m in methods}
