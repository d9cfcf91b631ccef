"""Read a GGUF artifact back with transformers (``from_pretrained(folder, gguf_file=...)``, dequantised) and
compare its logits with the source model's on the same prompts.

Tolerances on the relative RMS error ||Δlogits|| / ||source logits|| over every position and vocabulary entry
(a max over 49k x T entries is dominated by one outlier), from what each format's rounding allows, checked on
SmolLM2-135M and the tiny test Qwen3:

| type | tolerance | measured SmolLM2 / tiny Qwen3 | why |
|---|---|---|---|
| f16  | 0.005 | 0.0007 / 0.0005 | fp16 keeps ~3 decimal digits per weight |
| q8_0 | 0.05  | 0.022 / 0.013 | 8-bit blocks of 32 with an fp16 scale, error accumulating over layers |
| q4_0 | 0.50  | 0.35 / 0.16 | 4-bit blocks: only the ranking is expected to survive (top-1 agreement is reported) |

(SmolLM2's weights already went through Q4_1 in the shipped file, so re-quantising them to Q4_0 lands on a
different grid: that is why its Q4_0 error is the larger one.)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)

REL_TOLERANCE = {"f16": 0.005, "q8_0": 0.05, "q4_0": 0.50}


class GGUFVerificationError(AssertionError):
    pass


def load_gguf_model(folder: Path, gguf_file: str, dtype: torch.dtype = torch.float32):
    """transformers' own GGUF reader: dequantises every tensor into a dense model."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=dtype).eval()


@torch.inference_mode()
def compare_logits(ref_model, test_model, tokenizer, texts: Sequence[str]) -> dict:
    """Max abs and relative RMS logit error over every position, and agreement of the last-position argmax.

    Args:
        ref_model / test_model: causal LMs sharing ``tokenizer``.
        texts: prompts (already chat-templated or plain).
    """
    max_abs, sq_err, sq_ref, agree = 0.0, 0.0, 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, T)
        a = ref_model(input_ids=ids).logits.float()  # (1, T, V)
        b = test_model(input_ids=ids).logits.float()
        max_abs = max(max_abs, float((a - b).abs().max()))
        sq_err += float(((a - b) ** 2).sum())
        sq_ref += float((a ** 2).sum())
        agree += int(a[0, -1].argmax() == b[0, -1].argmax())
    return {"max_abs_err": max_abs, "rel_err": (sq_err / max(sq_ref, 1e-24)) ** 0.5,
            "top1_agreement": agree / max(len(texts), 1), "n_prompts": len(texts)}


def verify_gguf(folder: Path, gguf_file: str, qtype: str, ref_model, tokenizer, texts: Sequence[str]) -> dict:
    """Load the GGUF back, compare with ``ref_model``; raise GGUFVerificationError past the tolerance."""
    model = load_gguf_model(folder, gguf_file)
    stats = compare_logits(ref_model, model, tokenizer, texts)
    stats["tolerance_rel"] = REL_TOLERANCE[qtype]
    stats["passed"] = stats["rel_err"] <= REL_TOLERANCE[qtype]
    log.info("GGUF %s read back: rel err %.4g (tolerance %.3g), top-1 agreement %.2f",
             qtype, stats["rel_err"], REL_TOLERANCE[qtype], stats["top1_agreement"])
    if not stats["passed"]:
        raise GGUFVerificationError(
            f"{folder / gguf_file}: logits differ from the source by {stats['rel_err']:.4g} (relative), "
            f"over the {qtype} tolerance {REL_TOLERANCE[qtype]}"
        )
    return stats
