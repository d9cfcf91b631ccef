"""In-memory PTQ methods (dynamic INT8, HQQ, torchao) behind one ``apply_method`` call, and their measurement
against fp32 and bf16 on calibration prompts: last-position logit error, top-1 agreement and speed."""
from __future__ import annotations

import copy
import logging
import time
from typing import Sequence

import torch

from tools.export.methods import Method

log = logging.getLogger(__name__)


def apply_method(model: torch.nn.Module, method: Method) -> torch.nn.Module:
    """A quantised copy of the fp32 CPU ``model`` (the original is left as it is)."""
    if method.name == "dynamic-int8":
        from tools.export.dynamic_int8 import quantize_dynamic_int8

        return quantize_dynamic_int8(model)
    if method.name == "hqq-4bit":
        from tools.export.compat import HQQ_GROUP
        from tools.export.hqq_ptq import quantize_hqq

        return quantize_hqq(model, nbits=4, group_size=HQQ_GROUP)
    if method.name.startswith("torchao-"):
        from tools.export.torchao_ptq import quantize_torchao

        return quantize_torchao(model, method.name.split("-", 1)[1])
    raise ValueError(f"{method.name} is not an in-memory method")


@torch.inference_mode()
def _last_logits(model, tokenizer, texts: Sequence[str]) -> tuple[torch.Tensor, float]:
    """(N, V) last-position fp32 logits, one prompt at a time, and the seconds it took."""
    out = []
    t0 = time.perf_counter()
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, T)
        out.append(model(input_ids=ids, logits_to_keep=1).logits[0, -1].float())  # (V,)
    return torch.stack(out), time.perf_counter() - t0


def _errors(ref: torch.Tensor, x: torch.Tensor) -> dict:
    diff = x - ref  # (N, V)
    cos = torch.nn.functional.cosine_similarity(ref, x, dim=-1)  # (N,)
    return {"rel_rms_err": float(diff.norm() / ref.norm()), "max_abs_err": float(diff.abs().max()),
            "min_cosine": float(cos.min()),
            "top1_agreement": float((ref.argmax(-1) == x.argmax(-1)).float().mean())}


def evaluate_methods(model, tokenizer, methods: Sequence[Method], texts: Sequence[str]) -> list[dict]:
    """fp32, bf16 and each method on ``texts``: seconds per prompt and error vs fp32 (and vs bf16).

    Args:
        model: fp32 causal LM on CPU (unchanged).
        tokenizer: its tokenizer.
        methods: in-memory methods.
        texts: calibration prompts (tools.export.calibration).
    """
    _last_logits(model, tokenizer, texts[:1])  # warm-up: first-call allocations are not the method's cost
    ref, t_ref = _last_logits(model, tokenizer, texts)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    x_bf16, t_bf16 = _last_logits(bf16, tokenizer, texts)
    del bf16
    rows = [{"method": "fp32", "s_per_prompt": t_ref / len(texts), "speedup_vs_fp32": 1.0, **_errors(ref, ref)},
            {"method": "bf16", "s_per_prompt": t_bf16 / len(texts), "speedup_vs_fp32": t_ref / t_bf16,
             **_errors(ref, x_bf16)}]
    for m in methods:
        q = apply_method(model, m)
        _last_logits(q, tokenizer, texts[:1])
        x, t = _last_logits(q, tokenizer, texts)
        err_bf16 = _errors(x_bf16, x)
        rows.append({"method": m.name, "s_per_prompt": t / len(texts), "speedup_vs_fp32": t_ref / t,
                     **_errors(ref, x), "rel_rms_err_vs_bf16": err_bf16["rel_rms_err"]})
        del q
    return rows


def ptq_table(rows: Sequence[dict]) -> str:
    lines = ["| method | s / prompt | speed-up vs fp32 | rel. RMS logit error vs fp32 | max abs error | "
             "min cosine | top-1 agreement |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['s_per_prompt']:.3f} | {r['speedup_vs_fp32']:.2f}x | "
                     f"{r['rel_rms_err']:.4f} | {r['max_abs_err']:.3f} | {r['min_cosine']:.5f} | "
                     f"{r['top1_agreement']:.2f} |")
    return "\n".join(lines) + "\n"
