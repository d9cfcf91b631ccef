"""Label-token scoring: the next-token logits of the labels A, B, ... at the prompt's last position.

Written once for text and vision-language models. ``resolve_label_ids`` runs at load time and refuses a
tokenizer/prompt pair where a label is not exactly one token *as the model would emit it after the prompt*:
e.g. if the prompt ended with "Answer: " the model would write "A" as part of a merged " A" token, and reading
the logit of the bare "A" token would score the wrong thing.
"""
from __future__ import annotations

from typing import Sequence

import torch


class LabelTokenError(ValueError):
    pass


def resolve_label_ids(tokenizer, labels: Sequence[str], context: str) -> list[int]:
    """Token id of each label as emitted right after ``context`` (a rendered prompt's text).

    Raises LabelTokenError when a label is not one token there, is the unknown token, merges with the end of
    the context, or two labels share a token.
    """
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    ids: list[int] = []
    for label in labels:
        full = tokenizer(context + label, add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base:
            raise LabelTokenError(
                f"label {label!r} merges with the end of the prompt for {name}: the prompt ends with "
                f"{context[-12:]!r}, so the model would emit a different token (e.g. ' {label}' instead of "
                f"'{label}'); end the prompt so the label starts a new token"
            )
        extra = full[len(base) :]
        if len(extra) != 1:
            raise LabelTokenError(
                f"label {label!r} encodes to {len(extra)} tokens {extra} after the prompt for {name}; "
                f"each label must be a single token"
            )
        tid = extra[0]
        if tid == tokenizer.unk_token_id or tokenizer.decode([tid]).strip() != label:
            raise LabelTokenError(
                f"label {label!r} maps to token {tid} ({tokenizer.decode([tid])!r}) for {name}, "
                f"which is not the label itself"
            )
        ids.append(tid)
    if len(set(ids)) != len(ids):
        raise LabelTokenError(f"labels {list(labels)} share token ids {ids} for {name}")
    return ids


def label_scores(last_logits: torch.Tensor, label_ids: Sequence[int], n_labels: Sequence[int]) -> list[list[float]]:
    """Per-prompt label logits from last-position logits.

    Args:
        last_logits: (B, V) logits at each prompt's final position.
        label_ids: token id of every label A, B, ... (length >= max n_labels).
        n_labels: number of candidates of each prompt (B,); a prompt's scores are its first n labels.
    """
    idx = torch.as_tensor(list(label_ids), device=last_logits.device)
    sel = last_logits.index_select(-1, idx).float().cpu()  # (B, L)
    return [sel[b, :n].tolist() for b, n in enumerate(n_labels)]
