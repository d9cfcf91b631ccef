"""Stage-1 entry point: fit the configured retriever, write candidates and retrieval.json.

Output (see ``dataset.format``)::

    <prepared>/candidates/<retriever>/candidates_{val,test}.parquet   user_id, candidates, scores
    <prepared>/candidates/<retriever>/retrieval.json                 config, metrics, coverage, timing

retrieval.json is written last, so its presence (with matching config and dataset hashes) means the
candidate files are complete; a matching rerun is skipped.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from config import RetrievalConfig, config_hash
from dataset.format import SPLITS, PreparedDataset
from retrieval.data import EncodedSplit, ItemVocab, encode_split, encode_train
from retrieval.popularity import popularity_scores, popularity_topk
from retrieval.ranking_metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from retrieval.topk import faiss_topk

log = logging.getLogger(__name__)

RETRIEVAL_JSON = "retrieval.json"
CANDIDATES_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("candidates", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
)


def retrieval_keys(cfg: RetrievalConfig) -> dict:
    """Settings that change the candidates; popularity ignores every SASRec hyper-parameter."""
    if cfg.retriever == "popularity":
        return {"retriever": cfg.retriever, "top_k": cfg.top_k}
    return dataclasses.asdict(cfg)


def _up_to_date(out_dir: Path, prepared: PreparedDataset, chash: str, paths: dict) -> Optional[dict]:
    meta_path = out_dir / RETRIEVAL_JSON
    if not meta_path.is_file() or not all(p.is_file() for p in paths.values()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("config_hash") == chash and meta.get("dataset_hash") == prepared.content_hash:
        return meta
    return None


def _write_candidates(path: Path, split: EncodedSplit, vocab: ItemVocab, ids: list, scores: list) -> None:
    table = pa.Table.from_pydict(
        {
            "user_id": split.user_ids,
            "candidates": [vocab.decode(row) for row in ids],
            "scores": [row.astype(np.float32).tolist() for row in scores],
        },
        schema=CANDIDATES_SCHEMA,
    )
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # readers never see a half-written file


def coverage(ids: list[np.ndarray], targets: np.ndarray) -> float:
    """Share of users whose target is in their candidate list (computed from the lists themselves)."""
    return float(np.mean([t in row for row, t in zip(ids, targets.tolist())]))


def _run_popularity(splits: dict[str, EncodedSplit], n_items: int, cfg: RetrievalConfig):
    start = time.perf_counter()
    out = {}
    for name, sp in splits.items():
        ids, scores = popularity_topk(sp.histories, n_items, cfg.top_k)
        ranks = target_ranks(popularity_scores(sp.histories, n_items), sp.targets, sp.histories)
        out[name] = (ids, scores, ranks)
    return out, {"train_time_s": time.perf_counter() - start, "epochs": 0, "best_epoch": None}


def _run_sasrec(prepared: PreparedDataset, vocab: ItemVocab, splits: dict[str, EncodedSplit], cfg):
    # Imported here so popularity-only use never pays for importing torch.
    from retrieval.sasrec import full_ranking_ranks, resolve_threads, sasrec_vectors, train_sasrec

    model, result = train_sasrec(encode_train(prepared, vocab), splits["val"], vocab.n_items, cfg)
    out = {}
    for name, sp in splits.items():
        users, items = sasrec_vectors(model, sp)  # (U, d), (N, d)
        ids, scores = faiss_topk(users, items, sp.histories, cfg.top_k, threads=resolve_threads(cfg.threads))
        out[name] = (ids, scores, full_ranking_ranks(users, items, sp))
    info = {
        "train_time_s": result.train_time_s,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "best_val_ndcg@10": result.best_val_ndcg10,
        "history": result.history,
    }
    return out, info


def build_candidates(prepared: PreparedDataset, cfg: RetrievalConfig) -> dict:
    """Fit ``cfg.retriever`` on ``prepared`` and write its val/test candidates and retrieval.json.

    Args:
        prepared: the prepared-dataset folder.
        cfg: retrieval settings; ``retriever="none"`` writes nothing and returns {}.
    Returns:
        The retrieval.json content (also when the existing files were up to date).
    """
    if cfg.retriever == "none":
        log.info("retriever 'none': no candidates built")
        return {}
    paths = {s: prepared.candidates_path(cfg.retriever, s) for s in SPLITS}
    out_dir = paths["val"].parent
    keys = retrieval_keys(cfg)
    chash = config_hash(keys)
    existing = _up_to_date(out_dir, prepared, chash, paths)
    if existing is not None:
        log.info("%s candidates in %s are up to date", cfg.retriever, out_dir)
        return existing

    vocab = ItemVocab.from_prepared(prepared)
    splits = {s: encode_split(prepared, vocab, s) for s in SPLITS}
    log.info("retrieval %s on %s: %d users, %d items", cfg.retriever, prepared.name, len(splits["val"].user_ids),
             vocab.n_items)
    if cfg.retriever == "popularity":
        results, info = _run_popularity(splits, vocab.n_items, cfg)
    elif cfg.retriever == "sasrec":
        results, info = _run_sasrec(prepared, vocab, splits, cfg)
    else:
        raise ValueError(f"unknown retriever {cfg.retriever!r}")

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, cov = {}, {}
    for name, sp in splits.items():
        ids, scores, ranks = results[name]
        _write_candidates(paths[name], sp, vocab, ids, scores)
        metrics[name] = metrics_from_ranks(ranks, DEFAULT_KS)
        cov[name] = coverage(ids, sp.targets)
        log.info("%s %s: NDCG@10 %.4f Recall@10 %.4f Recall@20 %.4f coverage@%d %.4f", cfg.retriever, name,
                 metrics[name]["ndcg@10"], metrics[name]["recall@10"], metrics[name]["recall@20"], cfg.top_k,
                 cov[name])
    meta = {
        "retriever": cfg.retriever,
        "config": dataclasses.asdict(cfg),
        "config_hash": chash,
        "dataset": prepared.name,
        "dataset_hash": prepared.content_hash,  # key read by rerank.pipeline
        "users": len(splits["val"].user_ids),
        "items": vocab.n_items,
        "top_k": cfg.top_k,
        "files": {s: p.name for s, p in paths.items()},
        "metrics": metrics,
        "coverage": {s: {f"coverage@{cfg.top_k}": v} for s, v in cov.items()},
        **info,
        "versions": _versions(cfg.retriever),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out_dir / (RETRIEVAL_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out_dir / RETRIEVAL_JSON)
    return meta


def _versions(retriever: str) -> dict:
    import faiss
    import pandas

    v = {"numpy": np.__version__, "pandas": pandas.__version__, "faiss": faiss.__version__}
    if retriever == "sasrec":
        import torch

        v["torch"] = torch.__version__
    return v
