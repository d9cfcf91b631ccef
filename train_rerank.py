"""Fine-tune the reranker's verbalizer with LoRA (or QLoRA: LoRA on a 4-bit NF4 base) on train-split prompts.

    python train_rerank.py --data data/prepared/ml-100k-<hash> --model smollm2-135m --output_dir runs/ft \
        --max_history 5 --max_text_chars 0 --max_steps 100 --eval_every 25 --val_users 50
    python train_rerank.py ... --use_quantization          # QLoRA (bitsandbytes NF4, double quant)
    python train_rerank.py ... --max_steps 200             # rerun: resumes from runs/ft/last/ up to step 200
    python run_rerank.py --data DIR --model smollm2-135m --adapter runs/ft/best --max_history 5 --max_text_chars 0

Outputs in --output_dir: best/ (adapter with the best val NDCG@10), last/ (adapter + optimizer/scheduler/RNG
state + the resolved config), train_log.jsonl, val/step-N/ (validation runs), summary.json. Rerunning the same
command resumes; other hyper-parameters are refused unless --force (which starts over).
"""
from __future__ import annotations

import json
import logging
import sys


def main(argv=None) -> int:
    from config import parse_train_args

    cfg = parse_train_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from rerank.train import train

    summary = train(cfg)
    best = summary["best"]
    sys.stdout.write(
        f"{summary['steps']} steps on {summary['examples']} examples in {summary['train_time_s']} s "
        f"(loss {summary['first_loss']} -> {summary['final_loss']}); best val ndcg@10 "
        f"{best['ndcg@10']} at step {best['step']}\nadapter: {summary['output_dir']}/best\n"
    )
    logging.getLogger(__name__).debug("summary: %s", json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
