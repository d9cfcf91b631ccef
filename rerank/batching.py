"""Score many prompts in length-sorted batches, halving the batch on out-of-memory.

Sorting by token count keeps padding small (similar lengths share a batch); results are returned in the
input order. A batch that runs out of memory is retried at half size; finished batches are kept, so no user is
lost or scored twice.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from rerank.models.base import Backend
from rerank.prompts import Prompt
from rerank.verbalizer import label_scores

log = logging.getLogger(__name__)


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    msg = str(err).lower()
    # CPU allocator failures surface as RuntimeError
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score_prompts(
    backend: Backend,
    prompts: Sequence[Prompt],
    label_ids: Sequence[int],
    batch_size: int = 8,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """Label scores for every prompt (aligned with ``prompt.candidates``), in input order."""
    order = sorted(range(len(prompts)), key=lambda i: (prompts[i].n_tokens, i))
    results: list[list[float] | None] = [None] * len(prompts)
    bs = max(1, batch_size)
    pos = 0
    bar = tqdm(total=len(prompts), desc="scoring", unit="prompt", disable=not progress)
    while pos < len(order):
        idx = order[pos : pos + bs]
        batch = [prompts[i] for i in idx]
        nxt = [prompts[i] for i in order[pos + len(idx) : pos + len(idx) + bs]]
        backend.prefetch(batch)  # host-side preparation (VL: image decoding) overlaps the model's work
        if nxt:
            backend.prefetch(nxt)
        try:
            logits = backend.last_logits(batch)  # (b, V)
        except BaseException as err:  # noqa: BLE001 - re-raised unless it is an OOM we can back off from
            if not is_oom(err):
                raise
            if bs == 1:
                raise RuntimeError(
                    f"out of memory scoring a single prompt of {prompts[idx[0]].n_tokens} tokens "
                    f"(user {prompts[idx[0]].user_id!r}); lower --max_prompt_tokens"
                ) from err
            bs = max(1, bs // 2)
            log.warning("out of memory at batch size %d; retrying at %d", len(idx), bs)
            _free_cache()
            continue
        scores = label_scores(logits, label_ids, [len(prompts[i].candidates) for i in idx])
        for i, s in zip(idx, scores):
            results[i] = s
        pos += len(idx)
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    bar.close()
    return results  # type: ignore[return-value]
