"""Reranker vs retriever metrics on the same candidates, overall and on the subset whose target is a candidate.

"overall" covers every evaluated user of the split: a target missing from the candidates (or a user with no
candidates at all) is a miss at every K — the number comparable to LlamaRec's table. "subset" keeps only the
users whose target is among the candidates, which isolates the reranker's own skill.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from evaluation.metrics import DEFAULT_KS, compute_metrics, rank_by_scores, target_rank

TABLE_COLUMNS = ("hit@1", "ndcg@5", "ndcg@10", "ndcg@20", "recall@5", "recall@10", "recall@20", "mrr@10")


def evaluate_predictions(pred: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Metrics from a predictions table (user_id, target, candidates [retriever order], scores)."""
    rerank_ranks, retr_ranks, in_cands = [], [], []
    for cands, scores, target in zip(pred["candidates"], pred["scores"], pred["target"]):
        cands = list(cands)
        retr_ranks.append(target_rank(cands, target))
        rerank_ranks.append(target_rank(rank_by_scores(cands, list(scores)), target) if len(cands) else None)
        in_cands.append(target in cands)
    sub = [i for i, ok in enumerate(in_cands) if ok]
    out = {}
    for name, ranks in (("reranker", rerank_ranks), ("retriever", retr_ranks)):
        out[name] = {
            "overall": compute_metrics(ranks, ks),
            "subset": compute_metrics([ranks[i] for i in sub], ks) if sub else None,
        }
    out["n_users"] = len(pred)
    out["n_subset"] = len(sub)
    return out


def markdown_table(metrics: dict, columns: Sequence[str] = TABLE_COLUMNS, title: str = "") -> str:
    head = "| ranking | users | " + " | ".join(columns) + " |"
    lines = ([f"### {title}", ""] if title else []) + [head, "|" + "---|" * (len(columns) + 2)]
    for who in ("retriever", "reranker"):
        for part, n in (("overall", metrics["n_users"]), ("subset", metrics["n_subset"])):
            m = metrics[who][part]
            if m is None:
                continue
            cells = " | ".join(f"{m[c]:.4f}" for c in columns)
            lines.append(f"| {who} ({part}) | {n} | {cells} |")
    return "\n".join(lines) + "\n"
