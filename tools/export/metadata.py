"""``metadata.json`` of every artifact: what it was made from, how, and what it weighs.

Fields: base_model, adapter, method, bits, is_quantized, created (UTC ISO), files {name: bytes}, total_bytes,
source_sha256 (hash of the merged full-precision weights the artifact was made from), gguf_file (GGUF
artifacts: the file ``from_pretrained(..., gguf_file=)`` needs), eval (metrics, filled in when verified or
reported). ``rerank.models.resolve`` reads the same file when ``--model`` points at an artifact.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

METADATA = "metadata.json"
SCHEMA_VERSION = 1


def folder_files(folder: Path) -> dict[str, int]:
    """Relative path -> bytes of every file in ``folder`` (metadata.json itself excluded)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != METADATA}


def state_dict_sha256(model) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order: identifies the exact weights."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():  # viewed as bytes: numpy has no bfloat16
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_metadata(folder: Path, *, base_model: str, adapter: Optional[str], method: str, bits: int,
                   is_quantized: bool, source_sha256: str, extra: Optional[dict[str, Any]] = None) -> dict:
    """Write ``folder/metadata.json`` describing the files already in ``folder``; returns the dict.

    Args:
        folder: the artifact folder (usually still the temp folder of ``atomic_folder``).
        base_model: --model as given (alias, folder or hub id).
        adapter: LoRA adapter folder merged in, or None.
        method: the export format / PTQ method name (tools.export.methods).
        bits: nominal weight bits (32, 16, 8, 4).
        is_quantized: True when weights are stored below 16-bit floats.
        source_sha256: state_dict_sha256 of the merged full-precision model.
        extra: more fields (gguf_file, quant_type, eval, ...).
    """
    files = folder_files(folder)
    meta = {
        "schema": SCHEMA_VERSION,
        "base_model": base_model,
        "adapter": adapter,
        "method": method,
        "bits": bits,
        "is_quantized": is_quantized,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "total_bytes": sum(files.values()),
        "source_sha256": source_sha256,
        **(extra or {}),
    }
    (Path(folder) / METADATA).write_text(json.dumps(meta, indent=2))
    return meta


def read_metadata(folder: str | Path) -> Optional[dict]:
    """The artifact's metadata, or None for a folder that is not an export artifact."""
    path = Path(folder) / METADATA
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if not isinstance(meta, dict) or "method" not in meta:
        raise ValueError(f"{path} is not an export metadata file (no 'method' field)")
    return meta


def update_metadata(folder: str | Path, **fields: Any) -> dict:
    """Merge ``fields`` into an existing metadata.json (e.g. eval results after verification)."""
    meta = read_metadata(folder)
    if meta is None:
        raise FileNotFoundError(f"{Path(folder) / METADATA} not found")
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            meta[k] = {**meta[k], **v}
        else:
            meta[k] = v
    tmp = Path(folder) / f".{METADATA}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(Path(folder) / METADATA)  # a reader never sees half a JSON file
    return meta
