"""One rerank run: prepared dataset + candidates -> prompts -> label scores -> predictions and metrics.

Writes a run folder::

    predictions.parquet  user_id, target, candidates (retriever order), scores (aligned), retriever_scores,
                         target_in_candidates, n_history, n_tokens
    metrics.json         reranker/retriever x overall/subset metrics, n_users, n_subset, config, model, counts
    report.md            the metrics table (also printed)
    config.json          the resolved RerankConfig
    prompts.jsonl        with --dump_prompts: the exact scored prompts
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from config import DEFAULT_PREPARED_ROOT, DEFAULT_RUNS_ROOT, VL_MODES, RerankConfig, config_hash
from dataset.format import PreparedDataset
from evaluation.report import evaluate_predictions, markdown_table
from rerank.batching import score_prompts
from rerank.item_text import item_images, item_texts, supported_modes
from rerank.models.base import Backend, get_backend
from rerank.prompts import DOMAIN_NOUNS, LABELS, ItemView, Prompt, PromptBuilder, item_views
from rerank.verbalizer import resolve_label_ids

log = logging.getLogger(__name__)


def find_prepared(cfg: RerankConfig) -> PreparedDataset:
    if cfg.data:
        return PreparedDataset(cfg.data)
    if not cfg.dataset:
        raise ValueError("pass --data PREPARED_DIR or --dataset NAME (a folder made by data_prepare.py)")
    found = sorted(DEFAULT_PREPARED_ROOT.glob(f"{cfg.dataset}-*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"no prepared dataset for {cfg.dataset!r} under {DEFAULT_PREPARED_ROOT}; "
            f"run `python data_prepare.py --dataset {cfg.dataset}` first, or pass --data DIR"
        )
    if len(found) > 1:
        log.warning("%d prepared folders for %s; using the newest, %s (pass --data to choose)",
                    len(found), cfg.dataset, found[-1].parent)
    return PreparedDataset(found[-1].parent)


def load_candidates(prepared: PreparedDataset, cfg: RerankConfig) -> pd.DataFrame:
    """user_id -> candidates (+ scores) for the split, from an external file or the prepared folder."""
    if cfg.candidates:
        from retrieval.candidates_file import read_candidates

        return read_candidates(cfg.candidates, prepared, cfg.split)
    path = prepared.candidates_path(cfg.retriever, cfg.split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run data_prepare.py with --retriever {cfg.retriever}, or pass --candidates FILE"
        )
    meta_path = path.parent / "retrieval.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("dataset_hash") not in (None, prepared.content_hash):
            raise ValueError(f"{path} was built for another preparation of the data; rerun data_prepare.py")
    return pd.read_parquet(path)


def select_users(user_ids: list[str], max_users: Optional[int], seed: int) -> list[str]:
    """All users, or a seeded sample of ``max_users`` kept in dataset order."""
    if max_users is None or max_users >= len(user_ids):
        return user_ids
    keep = set(random.Random(seed).sample(user_ids, max_users))
    return [u for u in user_ids if u in keep]


def permuted(cands: list[str], p: int, seed: int, user_id: str) -> list[str]:
    """Permutation 0 is the retriever order; others are seeded shuffles (position-bias control)."""
    if p == 0:
        return list(cands)
    out = list(cands)
    random.Random(f"{seed}:{user_id}:{p}").shuffle(out)
    return out


def load_backend(cfg: RerankConfig) -> Backend:
    """The text LLM for text modes, Qwen3-VL for the VL modes, on the backend ``--backend`` resolves to."""
    from rerank.models.llm import pick_device
    from rerank.models.select import choose_backend

    vision = cfg.mode in VL_MODES
    chosen = choose_backend(cfg.backend, vision=vision, device=pick_device(cfg.device),
                            adapter=bool(cfg.adapter))
    common = dict(device_name=cfg.device, dtype_name=cfg.dtype, use_quantization=cfg.use_quantization,
                  quantization=cfg.quantization, use_flash_attention=cfg.use_flash_attention,
                  use_torch_compile=cfg.use_torch_compile, torch_compile_mode=cfg.torch_compile_mode)
    if vision:
        return get_backend("qwen3vl")(model_name=cfg.vl_model, use_unsloth=chosen == "unsloth", **common).load()
    return get_backend(chosen)(model_name=cfg.model, adapter=cfg.adapter, **common).load()


def run(cfg: RerankConfig, backend: Optional[Backend] = None) -> dict:
    """One mode, or with ``mode='all'`` every supported mode plus a comparison table."""
    if cfg.mode == "all":
        return run_all(cfg)
    return run_mode(cfg, backend)


def run_all(cfg: RerankConfig) -> dict:
    prepared = find_prepared(cfg)
    modes = supported_modes(prepared)
    log.info("mode all: %s", ", ".join(modes))
    root = Path(cfg.output_dir) if cfg.output_dir else default_run_dir(cfg, prepared)
    backends: dict[str, Backend] = {}  # one load per model, shared by its modes
    results = {}
    for mode in modes:
        sub = replace(cfg, mode=mode, data=str(prepared.root), output_dir=str(root / mode),
                      dump_prompts=f"{cfg.dump_prompts}.{mode}.jsonl" if cfg.dump_prompts else None)
        key = "vl" if mode in VL_MODES else "text"
        if key not in backends:
            backends[key] = load_backend(sub)
        results[mode] = run_mode(sub, backends[key])
    table = comparison_table(results)
    root.mkdir(parents=True, exist_ok=True)
    (root / "comparison.md").write_text(table)
    summary = {"modes": {m: {k: r[k] for k in ("reranker", "retriever", "n_users", "n_subset", "counts", "model")}
                         for m, r in results.items()},
               "config": asdict(cfg), "output_dir": str(root), "comparison": table}
    (root / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def comparison_table(results: dict, columns=("ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")) -> str:
    head = "| mode | model | users | title-only items | " + " | ".join(f"{c} (overall)" for c in columns) + \
        " | ndcg@10 (subset) |"
    lines = [head, "|" + "---|" * (len(columns) + 5)]
    first = next(iter(results.values()))
    r = first["retriever"]
    lines.append(f"| retriever order | — | {first['n_users']} | — | "
                 + " | ".join(f"{r['overall'][c]:.4f}" for c in columns)
                 + (f" | {r['subset']['ndcg@10']:.4f} |" if r["subset"] else " | — |"))
    for mode, m in results.items():
        o, sub = m["reranker"]["overall"], m["reranker"]["subset"]
        lines.append(f"| {mode} | {m['model']['model']} | {m['n_users']} | "
                     f"{m['counts']['title_only_fallback_items']} | " + " | ".join(f"{o[c]:.4f}" for c in columns)
                     + (f" | {sub['ndcg@10']:.4f} |" if sub else " | — |"))
    return "\n".join(lines) + "\n"


def run_mode(cfg: RerankConfig, backend: Optional[Backend] = None) -> dict:
    t0 = time.time()
    prepared = find_prepared(cfg)
    cands = load_candidates(prepared, cfg).set_index("user_id")
    examples = {ex.user_id: ex for ex in prepared.examples(cfg.split)}
    users = select_users(list(examples), cfg.max_users, cfg.seed)
    texts = item_texts(prepared, cfg.mode)
    images = item_images(prepared) if cfg.mode == "raw_image" else None
    if images is not None and not images:
        raise ValueError(
            f"--mode raw_image: {prepared.root} has no item images (items.image_path is empty); prepare it "
            f"with --image_map/--image_dir, or use a text mode"
        )

    too_many = [(u, len(cands.at[u, "candidates"])) for u in users
                if u in cands.index and len(cands.at[u, "candidates"]) > len(LABELS)]
    if too_many:
        raise ValueError(
            f"{len(too_many)} users have more than {len(LABELS)} candidates (labels A-Z), e.g. {too_many[:3]}; "
            f"use --top_k <= 26 when preparing, or trim the candidates file"
        )

    backend = backend or load_backend(cfg)
    noun = DOMAIN_NOUNS.get(prepared.name, "items")
    vl = cfg.mode in VL_MODES
    builder = PromptBuilder(backend.tokenizer, cfg.max_history, cfg.max_prompt_tokens,
                            cfg.max_title_chars, cfg.max_text_chars, noun,
                            templater=backend.processor if vl else None,
                            image_tokens=backend.image_tokens if vl else None, max_images=cfg.max_images)
    dummy = [ItemView(str(i), "x") for i in range(len(LABELS))]
    label_ids = resolve_label_ids(backend.tokenizer, LABELS, builder.render([], dummy, 10, 0))

    missing_detail: Counter = Counter()

    def note_missing(item_id: str) -> None:
        missing_detail[item_id] += 1

    prompts: list[Prompt] = []
    owners: list[tuple[str, int]] = []  # (user, permutation) of each prompt
    no_cands = 0
    for u in users:
        if u not in cands.index or len(cands.at[u, "candidates"]) == 0:
            no_cands += 1
            continue
        c = list(cands.at[u, "candidates"])
        history = examples[u].history[-cfg.max_history :] if cfg.max_history else []
        hist_views = item_views(texts, history, note_missing, images)
        for p in range(cfg.permutations):
            order = permuted(c, p, cfg.seed, u)
            # count title-only fallbacks once per user, not once per permutation
            views = item_views(texts, order, note_missing if p == 0 else None, images)
            prompts.append(builder.build(u, hist_views, views))
            owners.append((u, p))
    log.info("%d prompts for %d users (%d permutations each); %d users without candidates count as misses",
             len(prompts), len(users) - no_cands, cfg.permutations, no_cands)

    t1 = time.time()
    scores = score_prompts(backend, prompts, label_ids, cfg.llm_batch_size)
    t_score = time.time() - t1

    # average each item's score over permutations, then align with the retriever order
    per_user: dict[str, dict[str, list[float]]] = {}
    for (u, _), pr, s in zip(owners, prompts, scores):
        d = per_user.setdefault(u, {})
        for item, v in zip(pr.candidates, s):
            d.setdefault(item, []).append(v)
    first_prompt = {u: pr for (u, p), pr in zip(owners, prompts) if p == 0}

    rows = []
    for u in users:
        c = list(cands.at[u, "candidates"]) if u in cands.index else []
        d = per_user.get(u, {})
        rs = cands.at[u, "scores"] if (u in cands.index and "scores" in cands.columns) else None
        rows.append({
            "user_id": u,
            "target": examples[u].target,
            "candidates": c,
            "scores": [float(np.mean(d[i])) for i in c],
            "retriever_scores": [float(x) for x in rs] if rs is not None and len(rs) == len(c) else None,
            "target_in_candidates": examples[u].target in c,
            "n_history": first_prompt[u].n_history if u in first_prompt else 0,
            "n_tokens": first_prompt[u].n_tokens if u in first_prompt else 0,
        })
    pred = pd.DataFrame(rows)

    metrics = evaluate_predictions(pred)
    n_tokens = [p.n_tokens for p in prompts]
    metrics.update({
        "config": asdict(cfg),
        "dataset": {"root": str(prepared.root), "name": prepared.name, "content_hash": prepared.content_hash},
        "model": backend.describe(),
        "counts": {
            "prompts": len(prompts),
            "users_without_candidates": no_cands,
            "title_only_fallback_items": len(missing_detail),
            "title_only_fallback_occurrences": int(sum(missing_detail.values())),
            "prompts_with_history_truncated": sum(p.n_history < min(cfg.max_history, len(examples[p.user_id].history))
                                                  for p in prompts),
        },
        "prompt_tokens": {"mean": float(np.mean(n_tokens)) if n_tokens else 0, "max": max(n_tokens, default=0)},
        "timing_s": {"scoring": round(t_score, 2), "total": round(time.time() - t0, 2),
                     "prompts_per_s": round(len(prompts) / t_score, 2) if t_score > 0 else None},
    })
    out = write_run(cfg, prepared, pred, metrics, prompts, owners)
    metrics["output_dir"] = str(out)
    return metrics


def default_run_dir(cfg: RerankConfig, prepared: PreparedDataset) -> Path:
    key = config_hash({**asdict(cfg), "data": str(prepared.root)})
    return DEFAULT_RUNS_ROOT / f"{prepared.name}-{cfg.mode}-{cfg.split}-{key}"


def write_run(cfg, prepared, pred, metrics, prompts, owners) -> Path:
    out = Path(cfg.output_dir) if cfg.output_dir else default_run_dir(cfg, prepared)
    out.mkdir(parents=True, exist_ok=True)
    pred.to_parquet(out / "predictions.parquet", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    title = f"{prepared.name} · {cfg.split} · mode {cfg.mode} · {cfg.model}"
    (out / "report.md").write_text(markdown_table(metrics, title=title))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.dump_prompts:
        with open(cfg.dump_prompts, "w") as f:
            for (u, p), pr in zip(owners, prompts):
                f.write(json.dumps({"user_id": u, "permutation": p, "prompt": pr.text, "labels": pr.labels,
                                    "candidates": pr.candidates, "images": pr.images,
                                    "n_tokens": pr.n_tokens}) + "\n")
    return out
