"""Prepare a dataset folder, its stage-1 candidates and (optionally) Qwen3-VL item summaries.

Examples (run from the repository root)::

    # synthetic demo data (no downloads), popularity candidates
    python data_prepare.py --dataset sample --retriever popularity

    # MovieLens 100K from a local copy, 5-core, SASRec candidates
    python data_prepare.py --dataset ml-100k --data_root ../shared/data/ml-100k

    # Amazon Beauty: reviews/meta json.gz, ratings CSV, or user_sequence.txt + Amazon_Beauty.item
    python data_prepare.py --dataset beauty --data_root ../shared/data/amazon-beauty --retriever popularity

    # your own files (formats: dataset/sources/custom.py), data only
    python data_prepare.py --dataset custom --interactions my_log.csv --items my_items.csv --retriever none

    # options from a file (sections "data", "retrieval" and "summary"); CLI flags override it
    python data_prepare.py --config prepare.json --min_rating 4

    # + semantic summaries and captions of the items' images by Qwen3-VL-2B-Instruct in 4-bit NF4
    python data_prepare.py --use_quantization
    python data_prepare.py --dataset ml-100k --data_root ../shared/data/ml-100k --semantic_summary \
        --summary_model unsloth/Qwen3-VL-2B-Instruct --semantic_summary_batch_size 16 --max_new_tokens 64
    # a quick look: the first 20 items with an image, full precision, on the CPU
    python data_prepare.py --semantic_summary --max_items 20 --no_quantization --summary_device cpu

Running the same command twice reuses the prepared folder ("up to date"); a changed option rebuilds it.
The summary stage runs when --semantic_summary or any summary option (--use_quantization, --no_quantization,
--summary_model, --semantic_summary_batch_size, --max_new_tokens, --max_items, ...) is given, or the config
file has a "summary" section; --no-semantic_summary skips it. Default quantisation: 4-bit on CUDA, full
precision on CPU. An interrupted summary run continues where it stopped when the same command is run again.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import config
from dataset.format import PreparedDataset
from dataset.prepare import prepare

logger = logging.getLogger("data_prepare")


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_cfg, retr_cfg, summary_cfg = config.parse_prepare_args(argv)
    path = prepare(data_cfg)
    ds = PreparedDataset(path)
    s = ds.manifest["stats"]
    logger.info("prepared dataset %s: %s (%d users, %d items, %d interactions)", ds.name, path, s["users"],
                s["items"], s["interactions"])
    if retr_cfg.retriever == "none":
        logger.info("--retriever none: no candidates built")
    else:
        _retrieve(ds, retr_cfg)
    if summary_cfg.semantic_summary:
        # imported late: runs without summaries do not need the VL stack
        from dataset.qwen3vl_semantic_summary import summarise

        record = summarise(ds, summary_cfg)
        logger.info("summaries: %s (%d items, quantization %s, %s items/s)", ds.root / record["file"],
                    record["counts"]["done"], record["quantization"], record["items_per_s"])
    return 0


def _retrieve(ds: PreparedDataset, retr_cfg: config.RetrievalConfig) -> None:
    from retrieval import build_candidates  # imported late: data-only runs do not need torch/faiss

    summary = build_candidates(ds, retr_cfg) or {}
    out = ds.candidates_path(retr_cfg.retriever, "test").parent
    for split, m in summary.get("metrics", {}).items():
        logger.info("%s %s: %s", retr_cfg.retriever, split,
                    ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k.endswith(("@10", "@20"))))
    for split, cov in summary.get("coverage", {}).items():
        logger.info("%s %s coverage: %s", retr_cfg.retriever, split, cov)
    logger.info("candidates: %s", out)


if __name__ == "__main__":
    sys.exit(main())
