"""Training prompts for the verbalizer, from the TRAIN part of a prepared dataset only.

For each user the train part is ``seq[:-2]`` (``dataset.format.train_sequence``): the val and test targets are
never a training target, never in a training history, and never a negative. A training position ``t`` (the last
``positions_per_user`` positions with at least one item before them) gives

    history    = train[:t][-max_history:]
    target     = train[t]
    candidates = target + (n_candidates - 1) negatives drawn from the items outside the user's WHOLE sequence
                 (uniform, or by train-part popularity), shuffled with a seeded RNG so the target's label is
                 uniform over A, B, ...

Prompts are built by ``rerank.prompts.PromptBuilder`` with the same template, labels and budget as inference.
Everything is a pure function of (dataset, config, seed): a resumed run rebuilds the same examples.
"""
from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from dataset.format import PreparedDataset, train_sequence
from rerank.item_text import item_texts
from rerank.prompts import LABELS, Prompt, PromptBuilder, item_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    """One supervised prompt: ``candidates[target_index] == target``."""

    user_id: str
    position: int  # index of the target in the user's train part
    history: tuple[str, ...]
    target: str
    candidates: tuple[str, ...]
    target_index: int


def _user_key(user_id: str) -> int:
    """A stable 64-bit number per user id (Python's hash() is salted per process)."""
    return int(hashlib.sha256(user_id.encode()).hexdigest()[:16], 16)


def item_popularity(prepared: PreparedDataset) -> Counter:
    """Interaction counts over the train parts only (val/test targets do not inflate their own popularity)."""
    counts: Counter = Counter()
    for seq in prepared.sequences["items"]:
        counts.update(train_sequence(seq))
    return counts


def sample_negatives(rng: np.random.Generator, pool: np.ndarray, weights: Optional[np.ndarray], n: int) -> list[str]:
    """``n`` distinct items from ``pool`` (uniform, or proportional to ``weights``)."""
    n = min(n, len(pool))
    if weights is None:
        idx = rng.choice(len(pool), size=n, replace=False)
    else:
        idx = rng.choice(len(pool), size=n, replace=False, p=weights / weights.sum())
    return [str(pool[i]) for i in idx]


def build_examples(
    prepared: PreparedDataset,
    positions_per_user: int = 1,
    n_candidates: int = 20,
    negatives: str = "random",
    max_history: int = 10,
    seed: int = 42,
    max_users: Optional[int] = None,
) -> list[TrainExample]:
    """Training examples in user order (see the module docstring); users whose train part has < 2 items give none.

    Args:
        prepared: the prepared dataset.
        positions_per_user: last N positions of each user's train part used as targets.
        n_candidates: candidates per example, target included (<= 26).
        negatives: random | popular.
        max_history: history items kept before each position (0: no history).
        seed: negative sampling, candidate shuffles and the user sample.
        max_users: a seeded sample of N users (None: all).
    """
    if n_candidates > len(LABELS):
        raise ValueError(f"n_candidates={n_candidates}, but at most {len(LABELS)} labels (A-Z) are available")
    seqs = prepared.sequences
    users = list(seqs.index)
    if max_users is not None and max_users < len(users):
        keep = set(random.Random(f"{seed}:train-users").sample(users, max_users))
        users = [u for u in users if u in keep]
    all_items = np.array(sorted(prepared.items.index))
    pop = item_popularity(prepared) if negatives == "popular" else None
    # +1 smoothing: items seen only in val/test (or never) can still be drawn as popular negatives
    weights_all = np.array([pop[i] + 1.0 for i in all_items]) if pop is not None else None
    examples: list[TrainExample] = []
    short = 0
    for u in users:
        full = list(seqs.at[u, "items"])
        train = train_sequence(full)
        if len(train) < 2:
            short += 1
            continue
        outside = ~np.isin(all_items, np.array(full))  # never the user's own items (val/test targets included)
        pool = all_items[outside]
        weights = weights_all[outside] if weights_all is not None else None
        for t in range(max(1, len(train) - positions_per_user), len(train)):
            rng = np.random.default_rng([seed, t, _user_key(u)])
            negs = sample_negatives(rng, pool, weights, n_candidates - 1)
            cands = [train[t]] + negs
            order = rng.permutation(len(cands))  # uniform target label
            cands = [cands[i] for i in order]
            history = tuple(train[:t][-max_history:]) if max_history else ()
            examples.append(TrainExample(u, t, history, train[t], tuple(cands), cands.index(train[t])))
    if short:
        log.info("%d users have fewer than 2 train items: no training position", short)
    if not examples:
        raise ValueError(f"no training examples in {prepared.root}: every user's train part (sequence without the "
                         f"val and test items) has fewer than 2 items")
    return examples


def build_prompts(prepared: PreparedDataset, examples: list[TrainExample], builder: PromptBuilder,
                  mode: str = "text") -> list[Prompt]:
    """One prompt per example, exactly as ``rerank.pipeline.run_mode`` renders them for scoring."""
    texts = item_texts(prepared, mode)
    return [builder.build(ex.user_id, item_views(texts, ex.history), item_views(texts, ex.candidates))
            for ex in tqdm(examples, desc="train prompts", unit="prompt", leave=False)]
