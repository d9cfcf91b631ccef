"""The export pipeline: merge LoRA -> FP16 / BF16 -> INT8 / NF4 (bitsandbytes) -> GGUF F16 / Q8_0 / Q4_0 ->
size table. Every artifact is written all-or-nothing (``atomic``) with a metadata.json (``metadata``)."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from tools.export.atomic import atomic_folder, check_target
from tools.export.compat import check_compat
from tools.export.metadata import state_dict_sha256, write_metadata
from tools.export.methods import Method

log = logging.getLogger(__name__)

SIZES_MD = "sizes.md"


def load_config(model: str):
    """config.json of --model (alias materialised, folder or hub id) without loading weights."""
    from transformers import AutoConfig

    from rerank.models.resolve import resolve_model

    return AutoConfig.from_pretrained(resolve_model(model))


def export_all(model: str, out: Path, methods: Sequence[Method], adapter: Optional[str] = None,
               overwrite: bool = False, verify_texts: Optional[Sequence[str]] = None,
               gguf_tokenizer: bool = True) -> list[dict]:
    """Write one artifact folder ``out/<method>`` per artifact method; returns their metadata.

    Args:
        model: base model (alias, folder, hub id).
        out: parent folder of the artifacts (sizes.md goes there too).
        methods: artifact methods (tools.export.methods), in order.
        adapter: LoRA adapter folder to merge first, or None.
        overwrite: replace existing artifact folders (otherwise refused before any work).
        verify_texts: prompts for the GGUF read-back check (None skips it).
        gguf_tokenizer: write the tokenizer into GGUF headers (off only makes files for transformers alone).
    """
    out = Path(out)
    for m in methods:  # answer every "no" before loading anything
        if m.kind != "artifact":
            raise ValueError(f"{m.name} is applied in memory, not exported; use `tools/quantize.py ptq`")
        check_target(out / m.name, overwrite)
    check_compat(load_config(model), methods)

    from tools.export.merge import merge_adapter

    merged = merge_adapter(model, adapter)
    source_sha = state_dict_sha256(merged.model)
    common = {"base_model": model, "adapter": merged.adapter, "source_sha256": source_sha}
    out.mkdir(parents=True, exist_ok=True)
    staging: Optional[Path] = None
    rows = []
    try:
        for m in methods:
            extra: dict = {}
            with atomic_folder(out / m.name, overwrite) as tmp:
                if m.name in ("fp16", "bf16"):
                    from tools.export.merge import save_dense

                    save_dense(merged, tmp, torch.float16 if m.name == "fp16" else torch.bfloat16)
                elif m.name in ("int8", "nf4"):
                    from tools.export.bnb import save_bnb

                    if staging is None:  # bitsandbytes quantises while loading, so it needs the merged folder
                        staging = Path(tempfile.mkdtemp(prefix=".merged-fp32-", dir=out))
                        merged.model.save_pretrained(staging)
                    save_bnb(staging, merged.tokenizer, tmp, m.name)
                elif m.name.startswith("gguf-"):
                    extra = _export_gguf(merged, tmp, m.name.split("-", 1)[1], verify_texts, gguf_tokenizer)
                else:
                    raise ValueError(f"no exporter for {m.name!r}")
                meta = write_metadata(tmp, method=m.name, bits=m.bits, is_quantized=m.is_quantized,
                                      extra=extra, **common)
            log.info("%s: %s (%.1f MB)", m.name, out / m.name, meta["total_bytes"] / 1e6)
            rows.append({**meta, "path": str(out / m.name)})
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    _write_sizes(out, rows)
    return rows


def _export_gguf(merged, folder: Path, qtype: str, verify_texts, with_tokenizer: bool = True) -> dict:
    from tools.export.gguf_export import write_gguf
    from tools.export.gguf_verify import verify_gguf

    stem = Path(merged.source).name or "model"
    fname = f"{stem}-{qtype}.gguf"
    counts = write_gguf(merged.model, merged.tokenizer, folder / fname, qtype, name=stem,
                        with_tokenizer=with_tokenizer)
    merged.tokenizer.save_pretrained(folder)  # the exact HF tokenizer next to the file (run_rerank uses it)
    extra = {"gguf_file": fname, "gguf_type": qtype, "tensor_types": counts, "gguf_tokenizer": with_tokenizer}
    if verify_texts:
        extra["eval"] = {"gguf_readback": verify_gguf(folder, fname, qtype, merged.model, merged.tokenizer,
                                                      verify_texts)}
    return extra


def sizes_table(rows: Sequence[dict]) -> str:
    lines = ["| artifact | bits | quantised | size (MB) | files |", "|---|---|---|---|---|"]
    for r in rows:
        weights = [f for f in r["files"] if f.endswith((".safetensors", ".gguf", ".bin"))]
        lines.append(f"| {r['method']} | {r['bits']} | {'yes' if r['is_quantized'] else 'no'} | "
                     f"{r['total_bytes'] / 1e6:.1f} | {', '.join(weights)} |")
    return "\n".join(lines) + "\n"


def _write_sizes(out: Path, rows: Sequence[dict]) -> None:
    (out / SIZES_MD).write_text(sizes_table(rows))
    (out / "sizes.json").write_text(json.dumps(
        [{k: r[k] for k in ("method", "bits", "is_quantized", "total_bytes", "path")} for r in rows], indent=2))
