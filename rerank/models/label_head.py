"""Label-rows-only LM head: the last position's hidden state times the label rows of the output embedding.

The verbalizer reads 26 label logits at one position. A full head computes (B, H) @ (H, V) with V = 151,936
for Qwen3 and throws away all but 26 columns; here it is (B, H) @ (H, L). The result is returned as a (B, V)
tensor (the ``Backend.last_logits`` contract) with the label columns filled and every other column NaN, so a
caller that reads any other column gets NaN, never a plausible-looking wrong score.

``dense_label_head(model)`` returns None when the shortcut would not be exact (a quantised or non-linear head,
logit soft-capping or scaling); the backends then run the model's own head with ``logits_to_keep=1``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# config attributes that post-process logits after the head: the row shortcut would skip them
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def dense_label_head(model) -> Optional[torch.nn.Linear]:
    """The model's output embedding if it is a plain dense ``nn.Linear`` the shortcut can slice, else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or type(head) is not torch.nn.Linear:  # bnb Linear4bit/Linear8bitLt subclass nn.Linear
        return None
    if not head.weight.dtype.is_floating_point:
        return None
    cfg = getattr(model, "config", None)
    configs = [cfg, getattr(cfg, "text_config", None)]
    if any(getattr(c, a, None) not in (None, 1, 1.0) for c in configs if c is not None for a in _LOGIT_POSTPROCESSING):
        return None
    return head


def label_logits(head: torch.nn.Linear, last_hidden: torch.Tensor, label_ids: Sequence[int]) -> torch.Tensor:
    """(B, V) logits with only ``label_ids`` computed; other columns NaN.

    Args:
        head: the dense output embedding (weight (V, H), optional bias (V,)).
        last_hidden: (B, H) final-norm hidden state at each prompt's last position.
        label_ids: the token ids whose logits are needed (the verbalizer's labels).
    """
    rows = torch.as_tensor(list(label_ids), device=head.weight.device)  # (L,)
    weight = head.weight.index_select(0, rows)  # (L, H)
    bias = head.bias.index_select(0, rows) if head.bias is not None else None  # (L,)
    sel = F.linear(last_hidden.to(weight.dtype), weight, bias)  # (B, L)
    out = sel.new_full((sel.shape[0], head.weight.shape[0]), float("nan"))  # (B, V)
    out[:, rows] = sel
    return out
