"""Dynamic INT8 (torch.ao ``quantize_dynamic``) and bf16 on the stage-1 retriever, SASRec, against fp32.

SASRec's item side is an embedding table (no nn.Linear: dynamic INT8 leaves it as is); its user encoder is
2 causal blocks whose Linears (qkv, proj, ffn) are what ``quantize_dynamic`` replaces. This trains SASRec on a
prepared folder with the data_prepare defaults (the prepared folder keeps only the candidates, not the model),
then encodes every test history with each variant and reports encoding speed, user-vector error and the
retrieval quality each variant gives (full ranking over all non-history items, and top-20 candidate overlap
with fp32). Not a test, not imported by the library.

    python bench/bench_sasrec_int8.py --data data/prepared/ml-100k-27bcc241fa --out bench/results/sasrec_int8.md
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_vectors(model, split, repeats: int) -> tuple[np.ndarray, float]:
    """User vectors of the split and the median seconds of ``repeats`` encodings (after one warm-up)."""
    model.user_vectors(split.histories, torch.device("cpu"))
    times, vecs = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        vecs = model.user_vectors(split.histories, torch.device("cpu"))
        times.append(time.perf_counter() - t0)
    return vecs, statistics.median(times)


def main(argv=None) -> None:
    from config import RetrievalConfig
    from dataset.format import PreparedDataset
    from evaluation.metrics import metrics_from_ranks
    from retrieval.data import ItemVocab, encode_split, encode_train
    from retrieval.sasrec import full_ranking_ranks, train_sasrec
    from retrieval.topk import faiss_topk
    from tools.export.dynamic_int8 import quantize_dynamic_int8

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="prepared folder (data_prepare.py output)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="bench/results/sasrec_int8.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    prepared = PreparedDataset(a.data)
    cfg = RetrievalConfig(device="cpu", threads=a.threads)
    vocab = ItemVocab.from_prepared(prepared)
    val, test = encode_split(prepared, vocab, "val"), encode_split(prepared, vocab, "test")
    model, result = train_sasrec(encode_train(prepared, vocab), val, vocab.n_items, cfg)
    model = model.cpu().eval()

    variants = {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16),
                "dynamic-int8": quantize_dynamic_int8(model)}
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    ref_vecs = ref_top = None
    rows = []
    for name, m in variants.items():
        vecs, sec = timed_vectors(m, test, a.repeats)
        items = m.item_vectors().detach().float().numpy()  # (N, d); not quantised by dynamic INT8
        ranks = full_ranking_ranks(vecs, items, test)
        top, _ = faiss_topk(vecs, items, test.histories, 20, threads=a.threads)
        if name == "fp32":
            ref_vecs, ref_top, ref_sec = vecs, top, sec
        cos = (vecs * ref_vecs).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref_vecs, axis=1))
        overlap = np.mean([len(set(t) & set(r)) / 20 for t, r in zip(top, ref_top)])
        same_order = np.mean([np.array_equal(t, r) for t, r in zip(top, ref_top)])
        met = metrics_from_ranks(ranks)
        rows.append({"variant": name, "users": len(vecs), "encode_s": sec, "users_per_s": len(vecs) / sec,
                     "speedup": ref_sec / sec, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                     "rel_l2": float(np.linalg.norm(vecs - ref_vecs) / np.linalg.norm(ref_vecs)),
                     "ndcg@10": met["ndcg@10"], "recall@10": met["recall@10"], "recall@20": met["recall@20"],
                     "top20_overlap": float(overlap), "top20_same_order": float(same_order)})

    env = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv), "torch": torch.__version__,
           "threads": a.threads, "dataset": prepared.name, "sasrec": {"hidden": cfg.hidden, "layers": cfg.layers,
           "linear_layers": n_linear, "train_s": round(result.train_time_s, 1),
           "best_val_ndcg@10": round(result.best_val_ndcg10, 4)}}
    head = "\n".join(f"- {k}: `{v}`" for k, v in env.items())
    lines = ["| variant | users/s (test histories) | speed-up vs fp32 | min / mean cosine vs fp32 | rel. L2 error | "
             "NDCG@10 | Recall@10 | Recall@20 | top-20 overlap | same top-20 order |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['users_per_s']:.0f} | {r['speedup']:.2f}x | {r['min_cosine']:.5f} / "
                     f"{r['mean_cosine']:.5f} | {r['rel_l2']:.4f} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
                     f"{r['recall@20']:.4f} | {r['top20_overlap']:.3f} | {r['top20_same_order']:.2f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + "\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
