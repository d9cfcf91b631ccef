"""Quality report: every artifact of one model (and every in-memory PTQ method) reranks the same users through
the library's own pipeline; compared with the fp32 model: size on disk, load time, prompts/s, ΔNDCG@10,
top-1 agreement, Kendall τ of the candidate scores. Writes report.md, report.json and report.png.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import torch

from config import RerankConfig
from tools.export.agreement import agreement
from tools.export.chart import bar_chart
from tools.export.metadata import read_metadata
from tools.export.methods import Method

log = logging.getLogger(__name__)


def _backend(model_name: str, cache_root: Optional[Path], adapter: Optional[str] = None):
    """A CPU fp32 text backend loaded by the library's own ``load()``; GGUF artifacts are first dequantised into
    ``cache_root`` (a fresh folder, so the measured load time is the real first load). The reference model
    resolves through the normal cache (None), so an alias is not re-converted on every report. With ``adapter``
    the LoRA weights are merged into the base (what the artifacts were exported from, and what PTQ quantises)."""
    from rerank.models.llm import TransformersTextBackend
    from rerank.models.resolve import resolve_model

    # with an adapter keep the --model name: the adapter's base check names it in its errors
    name = model_name if adapter else resolve_model(model_name, cache_root=cache_root)
    backend = TransformersTextBackend(model_name=name, device_name="cpu", dtype_name="float32",
                                      adapter=adapter).load()
    if adapter:
        backend.model = backend.model.merge_and_unload()
        backend.prepare_scoring()
    return backend


def _adapter_path(adapter: str) -> Path:
    """The adapter folder an --adapter value means (a training folder means its best/); a folder that no longer
    exists (exports copied from elsewhere) is compared by its path as recorded."""
    from rerank.models.adapters import resolve_adapter_dir

    try:
        return resolve_adapter_dir(adapter).resolve()
    except FileNotFoundError:
        return Path(adapter).resolve()


def check_exports(exports: Optional[Path], model: str, adapter: Optional[str]) -> list[Path]:
    """The artifact folders under ``exports``; refused when one was made from another base or adapter (its
    ranking would be compared with the wrong reference)."""
    metas = {p: read_metadata(p) for p in sorted(exports.iterdir() if exports else [])}
    metas = {p: m for p, m in metas.items() if m}
    want = _adapter_path(adapter) if adapter else None
    wrong = [f"{p.name} (base {m['base_model']!r}, adapter {m['adapter']!r})" for p, m in metas.items()
             if m["base_model"] != model or (_adapter_path(m["adapter"]) if m["adapter"] else None) != want]
    if wrong:
        raise ValueError(f"exports in {exports} were not made from --model {model!r} with --adapter {adapter!r}: "
                         f"{', '.join(wrong)}; pass the same --model/--adapter as the export")
    return list(metas)


def _score(cfg: RerankConfig, backend, name: str, out: Path) -> tuple[dict, pd.DataFrame]:
    from rerank.pipeline import run_mode

    metrics = run_mode(replace(cfg, output_dir=str(out / "runs" / name)), backend)
    return metrics, pd.read_parquet(out / "runs" / name / "predictions.parquet")


def run_report(model: str, exports: Optional[Path], memory_methods: Sequence[Method], cfg: RerankConfig,
               out: Path, adapter: Optional[str] = None) -> list[dict]:
    """Score the fp32 reference, each artifact under ``exports`` and each in-memory method; write the report.

    Args:
        model: the full-precision model the artifacts were made from (alias, folder, hub id).
        exports: folder of ``tools/quantize.py export`` (one sub-folder per artifact), or None.
        memory_methods: in-memory PTQ methods applied to the fp32 model.
        cfg: rerank settings (data, split, max_users, max_history, batch size); device/dtype are CPU fp32.
        out: report folder.
        adapter: LoRA adapter merged into ``model`` for the reference and the in-memory methods (the exports
            must have been made with the same one).
    """
    folders = check_exports(exports, model, adapter)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, model=model, device="cpu", dtype="float32", mode="text")
    cache = Path(tempfile.mkdtemp(prefix=".report-cache-", dir=out))
    rows = []
    try:
        t0 = time.perf_counter()
        ref_backend = _backend(model, None, adapter)
        load_s = time.perf_counter() - t0
        _score(cfg, ref_backend, "fp32-warmup", out)  # the first scored run pays one-time allocator/kernel costs
        ref_metrics, ref_pred = _score(cfg, ref_backend, "fp32", out)
        rows.append(_row("fp32 (reference)", None, load_s, ref_metrics, ref_metrics, ref_pred, ref_pred))

        for folder in folders:
            meta = read_metadata(folder)
            t0 = time.perf_counter()
            backend = _backend(str(folder), cache)
            load_s = time.perf_counter() - t0
            metrics, pred = _score(replace(cfg, model=str(folder)), backend, meta["method"], out)
            rows.append(_row(meta["method"], meta["total_bytes"], load_s, metrics, ref_metrics, pred, ref_pred))
            del backend

        from tools.export.ptq import apply_method

        for m in memory_methods:
            t0 = time.perf_counter()
            backend = _backend(model, None, adapter)
            backend.model = apply_method(backend.model, m)
            # the label-rows head shortcut slices the head's weight, which torchao's int8 tensor subclass cannot
            # (aten.index_select unimplemented); PTQ rows use the model's own (quantised) head at the last position
            backend.label_head = False
            backend.prepare_scoring()  # the head / compiled body were taken from the fp32 model
            load_s = time.perf_counter() - t0
            metrics, pred = _score(cfg, backend, m.name, out)
            rows.append(_row(m.name, None, load_s, metrics, ref_metrics, pred, ref_pred))
            del backend
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    write_report(rows, cfg, out, adapter)
    return rows


def _row(name, size, load_s, metrics, ref_metrics, pred, ref_pred) -> dict:
    agree = agreement(ref_pred, pred)
    ndcg = metrics["reranker"]["overall"]["ndcg@10"]
    return {"name": name, "size_mb": size / 1e6 if size else None, "load_s": load_s,
            "prompts_per_s": metrics["timing_s"]["prompts_per_s"], "ndcg@10": ndcg,
            "delta_ndcg@10": ndcg - ref_metrics["reranker"]["overall"]["ndcg@10"],
            "top1_agreement": agree["top1_agreement"], "kendall_tau": agree["kendall_tau"], "users": agree["users"]}


def report_table(rows: Sequence[dict]) -> str:
    lines = ["| variant | size (MB) | load (s) | prompts/s | NDCG@10 | ΔNDCG@10 | top-1 agreement | Kendall τ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_mb']:.1f}" if r["size_mb"] else "— (in memory)"
        lines.append(f"| {r['name']} | {size} | {r['load_s']:.1f} | {r['prompts_per_s']:.2f} | {r['ndcg@10']:.4f} | "
                     f"{r['delta_ndcg@10']:+.4f} | {r['top1_agreement']:.2f} | {r['kendall_tau']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[dict], cfg: RerankConfig, out: Path, adapter: Optional[str] = None) -> None:
    png = bar_chart(rows, out / "report.png")
    head = (f"# Export / quantisation quality report\n\nmodel `{cfg.model if rows else ''}`"
            f"{f' + adapter `{adapter}`' if adapter else ''} · data `{cfg.data}` · "
            f"split {cfg.split} · {rows[0]['users'] if rows else 0} users · max_history {cfg.max_history} · CPU, "
            f"torch threads {torch.get_num_threads()}\n\n")
    (out / "report.md").write_text(head + report_table(rows) + f"\n![chart]({png.name})\n")
    (out / "report.json").write_text(json.dumps(list(rows), indent=2))
    log.info("report: %s", out / "report.md")
