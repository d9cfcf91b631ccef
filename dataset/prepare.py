"""Build (or reuse) a prepared-dataset folder from a ``DataConfig``: load, filter, write, manifest.

``prepare(cfg)`` is idempotent: when the target folder's manifest has the same config hash and format
version, its raw inputs have the same size and mtime, and every file listed in ``hashes`` still has its
sha256, nothing is written ("up to date"). Otherwise the folder is rebuilt.

Writes are atomic at folder level: everything is built in a temporary folder beside the target and then
swapped in with renames, so a crash leaves either the old folder or the new one, never a half-written one.
A rebuild replaces the whole folder, including ``candidates/`` made for the old content (they would be stale).

Item images (``dataset.images``) are attached after filtering, so only kept items are fetched and decoded; the
image settings are part of the config hash and the ``--image_map`` file's sha256 is checked on every run, so
an edited map rebuilds while an unchanged one stays a no-op.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from config import DataConfig, config_hash
from dataset.filters import apply_filters, build_sequences
from dataset.format import ITEMS_FILE, MANIFEST_FILE, SEQUENCES_FILE, sha256_file
from dataset.images import attach_images
from dataset.sources import load_raw

logger = logging.getLogger(__name__)

# Bump when the files written for an unchanged config change (new column, different text): forces a rebuild.
FORMAT_VERSION = 2  # 2: items.parquet gained image_path (+ images/, manifest "images")


def _versions() -> dict:
    return {"python": platform.python_version(), "pandas": pd.__version__, "pyarrow": pa.__version__,
            "numpy": np.__version__}


def _input_stamps(paths: list[Path]) -> dict:
    """size + mtime of each raw input: cheap to check, catches a replaced raw file."""
    out = {}
    for p in paths:
        st = Path(p).stat()
        out[str(Path(p).resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def _file_hashes(root: Path) -> dict:
    return {f.relative_to(root).as_posix(): sha256_file(f)
            for f in sorted(root.rglob("*")) if f.is_file() and f.name != MANIFEST_FILE}


def is_up_to_date(out_dir: Path, cfg: DataConfig) -> bool:
    """True when ``out_dir`` holds a complete prepared folder built from ``cfg`` (see module docstring)."""
    manifest_path = out_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON; rebuilding", manifest_path)
        return False
    if manifest.get("config_hash") != config_hash(cfg.content_keys()):
        return False
    if manifest.get("format_version") != FORMAT_VERSION:
        return False
    for path, stamp in manifest.get("inputs", {}).items():
        p = Path(path)
        if not p.is_file():
            return False
        st = p.stat()
        if st.st_size != stamp["size"] or st.st_mtime_ns != stamp["mtime_ns"]:
            logger.info("raw input %s changed; rebuilding", p)
            return False
    if cfg.image_map:
        map_path = Path(cfg.image_map)
        recorded = manifest.get("images", {}).get("image_map_sha256")
        if not map_path.is_file() or sha256_file(map_path) != recorded:
            logger.info("image map %s changed; rebuilding", map_path)
            return False
    hashes = manifest.get("hashes", {})
    if ITEMS_FILE not in hashes or SEQUENCES_FILE not in hashes:
        return False
    for name, digest in hashes.items():
        f = out_dir / name
        if not f.is_file() or sha256_file(f) != digest:
            logger.info("%s is missing or modified; rebuilding", f)
            return False
    return True


def _write_parquet(df: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    pq.write_table(table, path)


def _items_schema(items: pd.DataFrame) -> pa.Schema:
    fields = [pa.field("item_id", pa.string()), pa.field("title", pa.string()), pa.field("text", pa.string()),
              pa.field("image", pa.string()), pa.field("image_path", pa.string())]
    for col in items.columns[5:]:
        typ = pa.float64() if pd.api.types.is_float_dtype(items[col]) else (
            pa.int64() if pd.api.types.is_integer_dtype(items[col]) else pa.string())
        fields.append(pa.field(col, typ))
    return pa.schema(fields)


def _normalise_extra_columns(items: pd.DataFrame) -> pd.DataFrame:
    """Extra item columns become numbers or strings (None for missing) so Parquet types are predictable."""
    items = items.copy()
    for col in items.columns[4:]:
        s = items[col]
        if not (pd.api.types.is_float_dtype(s) or pd.api.types.is_integer_dtype(s)):
            items[col] = [None if (v is None or (isinstance(v, float) and v != v)) else str(v) for v in s]
            items[col] = items[col].astype(object)
    return items


def _build(cfg: DataConfig, build_dir: Path) -> dict:
    """Write items, sequences (and assets) into ``build_dir``; return the manifest without hashes."""
    raw = load_raw(cfg, build_dir)
    raw_counts = {"users": int(raw.interactions["user_id"].nunique()),
                  "items": int(raw.interactions["item_id"].nunique()),
                  "interactions": int(len(raw.interactions)), "items_in_table": int(len(raw.items))}
    res = apply_filters(raw.interactions, raw.items, cfg.min_rating, cfg.min_uc, cfg.min_sc)
    seqs = build_sequences(res.interactions)
    items = _normalise_extra_columns(res.items)
    if raw.write_assets is not None:
        raw.write_assets(items, build_dir)  # before attach_images: loader-written files are image sources
    items, images = attach_images(items, cfg, build_dir, known_item_ids=raw.items["item_id"])
    _write_parquet(items, build_dir / ITEMS_FILE, _items_schema(items))
    _write_parquet(seqs, build_dir / SEQUENCES_FILE,
                   pa.schema([pa.field("user_id", pa.string()), pa.field("items", pa.list_(pa.string()))]))
    skipped = {**{k: v for k, v in raw.skipped.items()}, **res.skipped}
    stats = {"users": int(len(seqs)), "items": int(len(items)), "interactions": int(len(res.interactions))}
    return {
        "config": dataclasses.asdict(cfg),
        "config_hash": config_hash(cfg.content_keys()),
        "format_version": FORMAT_VERSION,
        "stats": stats,
        "raw": raw_counts,
        "skipped": skipped,
        "images": images,
        "notes": raw.notes + res.notes,
        "inputs": _input_stamps(raw.inputs),
        "versions": _versions(),
    }


def _swap_in(build_dir: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``build_dir`` by renames (the old folder is removed only afterwards)."""
    old: Optional[Path] = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    build_dir.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare(cfg: DataConfig) -> Path:
    """Build the prepared folder for ``cfg`` (default ``cfg.resolved_output_dir()``) and return its path.

    Raises FileNotFoundError / ValueError with the offending path or value for bad input, and refuses to
    replace an existing non-empty folder that is not a prepared dataset (no manifest.json).
    """
    out_dir = cfg.resolved_output_dir()
    if is_up_to_date(out_dir, cfg):
        logger.info("%s is up to date (config hash %s); nothing to do", out_dir, config_hash(cfg.content_keys()))
        return out_dir
    if out_dir.exists() and not (out_dir / MANIFEST_FILE).is_file() and (
            not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not a prepared dataset (no {MANIFEST_FILE}); "
                              f"refusing to replace it: choose another --output_dir or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = _build(cfg, build_dir)
        manifest["hashes"] = _file_hashes(build_dir)
        manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # the manifest goes last: a folder with a manifest is a complete folder
        (build_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        _swap_in(build_dir, out_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    s = manifest["stats"]
    logger.info("wrote %s: %d users, %d items, %d interactions", out_dir, s["users"], s["items"],
                s["interactions"])
    return out_dir
