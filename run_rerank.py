"""Rerank stage-1 candidates with an LLM verbalizer (one forward pass per prompt) and evaluate.

    python run_rerank.py --dataset sample --model smollm2-135m --max_users 100
    python run_rerank.py --data data/prepared/ml-100k-<hash> --model Qwen/Qwen3-0.6B --mode text
    python run_rerank.py --data DIR --mode semantic_summary_small --use_quantization
    python run_rerank.py --data DIR --candidates my_candidates.parquet --permutations 3 --dump_prompts p.jsonl

Outputs go to --output_dir (default runs/<dataset>-<mode>-<split>-<config hash>/): predictions.parquet,
metrics.json, report.md, config.json. The metrics table is printed at the end.
"""
from __future__ import annotations

import logging
import sys


def main(argv=None) -> int:
    from config import parse_rerank_args

    cfg = parse_rerank_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from rerank.pipeline import run

    metrics = run(cfg)
    out = metrics["output_dir"]
    with open(f"{out}/report.md") as f:
        sys.stdout.write(f.read())
    c = metrics["counts"]
    sys.stdout.write(
        f"\n{metrics['n_users']} users ({metrics['n_subset']} with the target among the candidates), "
        f"{c['prompts']} prompts, {metrics['timing_s']['prompts_per_s']} prompts/s; "
        f"title-only fallback items: {c['title_only_fallback_items']}\nrun folder: {out}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
