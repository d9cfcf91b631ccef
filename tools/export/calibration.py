"""Calibration / verification prompts: the real rerank prompts of a prepared dataset, built by the library's
own prompt code (``rerank.prompts``), so PTQ statistics and logit checks see what the reranker will score."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

from config import RerankConfig

log = logging.getLogger(__name__)

FALLBACK_TEXTS = (
    "You rank movies. History: Toy Story; Heat; Casablanca. Candidates: A. Fargo B. Alien C. Babe. Answer:",
    "The quick brown fox jumps over the lazy dog, then ranks the next three items by relevance.",
)


def dataset_prompts(tokenizer, data: Optional[str], n: int = 16, split: str = "val", max_history: int = 5,
                    seed: int = 42, retriever: str = "sasrec") -> list[str]:
    """Up to ``n`` prompt texts from the prepared dataset folder ``data`` (the val split by default, so
    calibration never sees the test targets' prompts); fixed fallback texts when ``data`` is None.

    Args:
        tokenizer: the model's tokenizer (chat template, token budget).
        data: prepared-dataset folder, or None.
        n: number of prompts (users, seeded sample).
        split: val | test.
        max_history: history items per prompt.
        seed: user sample seed.
        retriever: whose candidates fill the prompts.
    """
    if data is None:
        log.info("no --data: using %d fixed calibration texts", len(FALLBACK_TEXTS))
        return list(FALLBACK_TEXTS)
    from rerank.item_text import item_texts
    from rerank.pipeline import find_prepared, load_candidates, select_users
    from rerank.prompts import DOMAIN_NOUNS, PromptBuilder, item_views

    cfg = replace(RerankConfig(), data=data, retriever=retriever, split=split, max_history=max_history, max_users=n, seed=seed)
    prepared = find_prepared(cfg)
    cands = load_candidates(prepared, cfg).set_index("user_id")
    examples = {ex.user_id: ex for ex in prepared.examples(split)}
    texts = item_texts(prepared, "text")
    builder = PromptBuilder(tokenizer, cfg.max_history, cfg.max_prompt_tokens, cfg.max_title_chars,
                            cfg.max_text_chars, DOMAIN_NOUNS.get(prepared.name, "items"))
    out = []
    for u in select_users([u for u in examples if u in cands.index], n, seed):
        history = examples[u].history[-max_history:] if max_history else []
        prompt = builder.build(u, item_views(texts, history, None), item_views(texts, list(cands.at[u, "candidates"]), None))
        out.append(prompt.text)
    log.info("%d calibration prompts from %s (%s split)", len(out), prepared.root, split)
    return out
