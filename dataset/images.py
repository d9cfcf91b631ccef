"""Item images for a prepared folder: find each item's source, fetch, verify, normalise, cache, attach.

Where an item's image comes from (the first that applies):

1. ``--image_map FILE`` (CSV/TSV/Parquet): a row for the item. Columns ``item_id,image`` by default, other
   names with ``--image_map_columns ITEM_COL,IMAGE_COL``. ``--image_template`` turns the image column's value
   into a path or URL: ``{}`` is that value and ``{name}`` any column of the row, e.g.
   ``MovieImages/{}.jpg``. Relative paths are relative to ``--image_dir`` (default: the map file's folder).
2. The dataset's own ``image`` column (the sample posters, Amazon ``imUrl``, a custom items file's ``image``).
   Relative paths are tried against ``--image_dir``, the folder being built (files the loader wrote), then
   ``--data_root`` and the folder of ``--items``.

``http(s)://`` sources are downloaded (``dataset.image_download``); everything else is a local path. Every
image is verified and normalised by ``dataset.image_processing`` (RGB, long side <= ``--image_max_side``).

Cache: ``<cache>/processed/<sha256 of the source bytes>-<settings tag>.{jpg,png,fail}``. The key depends
only on the bytes and the settings, so a second run (into the same or a new prepared folder, or after an
unrelated config change) decodes nothing: it hashes the sources and links the cached files. A ``.fail`` file
remembers why an image was rejected, so bad images are not decoded again either. The prepared folder gets
``images/<item id>.<ext>``, a hard link to the cached file where the file system allows it, a copy otherwise.

The manifest's ``images`` entry counts every item once: ``attached`` or one reason (``no_source``,
``missing_file``, ``unreadable``, ``corrupt``, ``too_large``, ``download_failed``, ``download_disabled``);
``missing`` = ``no_source`` + ``missing_file``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pandas as pd
from PIL import Image
from tqdm import tqdm

from config import default_image_cache_dir
from dataset.format import sha256_file
from dataset.image_download import DownloadSettings, download_all
from dataset.image_processing import ImageRejected, ImageSettings, normalise_image
from dataset.raw import MalformedRow, read_records
from dataset.sources.custom import read_table_rows

logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
REASONS = ("no_source", "missing_file", "unreadable", "corrupt", "too_large", "download_failed",
           "download_disabled")
MAX_EXAMPLES = 5
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def file_name_for(item_id: str) -> str:
    """A file-name-safe stem for an item id; ids that needed changes get a hash suffix to stay distinct."""
    safe = _SAFE.sub("_", item_id)
    if safe == item_id and not item_id.startswith(".") and len(item_id) <= 100:
        return item_id
    return f"{safe.lstrip('.')[:80]}-{hashlib.sha256(item_id.encode()).hexdigest()[:10]}"


# ------------------------------------------------------------------ the map file

def read_image_map(path: Path, columns: str = "item_id,image",
                   template: Optional[str] = None) -> tuple[dict[str, Optional[str]], dict]:
    """Read ``item id -> image source`` (None for an empty value) from a CSV/TSV/Parquet map file.

    Returns (mapping, counts) with counts ``rows``, ``malformed_rows``, ``duplicate_rows`` (first row wins).
    """
    if not path.is_file():
        raise FileNotFoundError(f"--image_map {path} not found: expected a CSV/TSV file with columns {columns}")
    item_col, image_col = _split_columns(columns)
    header, rows, unit = read_table_rows(path)
    missing = [c for c in (item_col, image_col) if c not in header]
    if missing:
        raise ValueError(f"{path}: image map lacks column(s) {missing}; has {header} "
                         f"(choose columns with --image_map_columns ITEM_COL,IMAGE_COL)")

    def parse(row) -> Optional[tuple]:
        if isinstance(row, dict):
            rec = row
        else:
            if not any(str(c).strip() for c in row):
                return None
            if len(row) != len(header):
                raise MalformedRow(f"expected {len(header)} fields, got {len(row)}")
            rec = dict(zip(header, row))
        rec = {k: ("" if v is None or (isinstance(v, float) and v != v) else str(v).strip()) for k, v in rec.items()}
        item_id = rec[item_col]
        if not item_id:
            raise MalformedRow(f"empty {item_col}")
        value = rec[image_col]
        if not value:
            return item_id, None
        if template:
            try:
                value = template.format(value, **rec)
            except (KeyError, IndexError) as e:
                raise ValueError(f"--image_template {template!r} names {e}, which is not a column of {path} "
                                 f"(columns: {header})") from None
        return item_id, value

    records, n_bad = read_records(rows, parse, str(path), "image map rows", unit)
    mapping: dict[str, Optional[str]] = {}
    n_dup = 0
    for item_id, source in records:
        if item_id in mapping:
            n_dup += 1
            continue
        mapping[item_id] = source
    if n_dup:
        logger.warning("%s: %d duplicate item ids; the first row of each is used", path, n_dup)
    return mapping, {"rows": len(records), "malformed_rows": n_bad, "duplicate_rows": n_dup}


def _split_columns(columns: str) -> tuple[str, str]:
    parts = [c.strip() for c in columns.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--image_map_columns must be 'ITEM_COL,IMAGE_COL', got {columns!r}")
    return parts[0], parts[1]


# ------------------------------------------------------------------ cache

def _cached(processed_dir: Path, key: str) -> Optional[Path]:
    for ext in (".jpg", ".png", ".fail"):
        p = processed_dir / f"{key}{ext}"
        if p.is_file():
            return p
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _process_into_cache(src: Path, processed_dir: Path, key: str, settings: ImageSettings) -> Path:
    """Decode ``src`` once and store the result (or the rejection) under ``key``."""
    try:
        data = src.read_bytes()
        encoded, ext, _ = normalise_image(data, settings)
    except ImageRejected as e:
        out = processed_dir / f"{key}.fail"
        _atomic_write(out, json.dumps({"reason": e.reason, "detail": e.detail}).encode())
        return out
    out = processed_dir / f"{key}{ext}"
    _atomic_write(out, encoded)
    return out


def _place(cached: Path, dest: Path) -> None:
    """Hard-link (or copy) ``cached`` to ``dest``, replacing whatever is there (e.g. the loader's source)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(cached, tmp)
    except OSError:  # other file system, or links not supported
        shutil.copyfile(cached, tmp)
    os.replace(tmp, dest)


# ------------------------------------------------------------------ sources

def _resolve_local(source: str, bases: list[Path]) -> tuple[Optional[Path], Optional[str]]:
    """(path, None) for an existing file, else (None, reason)."""
    p = Path(source).expanduser()
    candidates = [p] if p.is_absolute() else [b / p for b in bases]
    for c in candidates:
        if c.is_file():
            return c, None
    if any(c.exists() for c in candidates):
        return None, "unreadable"  # a folder or special file where an image was expected
    return None, "missing_file"


def _sha256_or_reason(path: Path) -> tuple[Optional[str], Optional[str]]:
    try:
        return sha256_file(path), None
    except OSError as e:
        logger.debug("cannot read %s: %s", path, e)
        return None, "unreadable"


def attach_images(items: pd.DataFrame, cfg, build_dir: Path, known_item_ids) -> tuple[pd.DataFrame, dict]:
    """Add ``image_path`` to ``items`` (and fill ``image`` from the map); write ``build_dir/images/``.

    Args:
        items: the final items table (after filtering).
        cfg: the DataConfig (image_* fields, data_root, items).
        build_dir: the prepared folder being built.
        known_item_ids: every item id of the raw dataset, to tell unknown map rows from filtered-out items.

    Returns (items, the manifest's ``images`` entry).
    """
    t0 = time.perf_counter()
    settings = ImageSettings(max_side=cfg.image_max_side, fmt=cfg.image_format, max_pixels=cfg.image_max_pixels)
    cache_dir = Path(cfg.image_cache_dir) if cfg.image_cache_dir else default_image_cache_dir()
    image_dir = Path(cfg.image_dir) if cfg.image_dir else None
    if image_dir is not None and not image_dir.is_dir():
        raise FileNotFoundError(f"--image_dir {image_dir} not found: expected the folder image paths are relative to")
    report: dict = {"source": "items' image column", "max_side": settings.max_side, "format": settings.fmt,
                    "max_pixels": settings.max_pixels, "image_dir": str(image_dir) if image_dir else None,
                    "image_map": None, "items": int(len(items)), "attached": 0, "missing": 0,
                    **{r: 0 for r in REASONS}, "unknown_items_in_map": 0}

    items = items.copy()
    # the loaders give None for "no image", but a filter step can turn it into NaN
    sources = [None if (v is None or (isinstance(v, float) and v != v) or not str(v).strip()) else str(v).strip()
               for v in items["image"]]
    from_map = [False] * len(items)
    map_bases: list[Path] = []
    if cfg.image_map:
        map_path = Path(cfg.image_map)
        mapping, map_counts = read_image_map(map_path, cfg.image_map_columns, cfg.image_template)
        known = set(map(str, known_item_ids))
        unknown = [i for i in mapping if i not in known]
        if len(unknown) == len(mapping):
            raise ValueError(f"--image_map {map_path}: none of its {len(mapping)} item ids is an item of the "
                             f"dataset (map ids e.g. {unknown[:MAX_EXAMPLES]}, dataset ids e.g. "
                             f"{sorted(known)[:MAX_EXAMPLES]}); check --image_map_columns")
        if unknown:
            logger.warning("%s: %d item ids are not items of the dataset and are ignored, e.g. %s",
                           map_path, len(unknown), unknown[:MAX_EXAMPLES])
        for k, item_id in enumerate(items["item_id"]):
            if item_id in mapping:
                sources[k], from_map[k] = mapping[item_id], True
        report.update(source="image_map + items' image column", image_map=str(map_path),
                      image_map_sha256=sha256_file(map_path), image_map_columns=cfg.image_map_columns,
                      image_template=cfg.image_template, unknown_items_in_map=len(unknown),
                      map_rows=map_counts["rows"], map_malformed_rows=map_counts["malformed_rows"],
                      map_duplicate_rows=map_counts["duplicate_rows"], items_from_map=int(sum(from_map)))
        map_bases = [image_dir or map_path.parent]
    column_bases = [b for b in (image_dir, build_dir, Path(cfg.data_root) if cfg.data_root else None,
                                Path(cfg.items).parent if getattr(cfg, "items", None) else None) if b is not None]
    items["image"] = pd.Series(sources, index=items.index, dtype=object)

    # 1. fetch URLs (or reuse earlier downloads)
    urls = [s for s in sources if s and is_url(s)]
    downloads = {}
    if urls and cfg.image_download:
        dl = DownloadSettings(timeout=cfg.image_download_timeout, retries=cfg.image_download_retries,
                              workers=cfg.image_workers * 2)
        downloads = download_all(urls, cache_dir / "downloads", dl)
        report["downloaded"] = sum(r.fetched for r in downloads.values())
        report["download_reused"] = sum(1 for r in downloads.values() if r.path is not None and not r.fetched)

    # 2. locate every item's source file, or its reason
    reasons: list[Optional[str]] = [None] * len(items)
    files: list[Optional[Path]] = [None] * len(items)
    for k, src in enumerate(sources):
        if not src:
            reasons[k] = "no_source"
        elif is_url(src):
            if not cfg.image_download:
                reasons[k] = "download_disabled"
            elif downloads[src].path is None:
                reasons[k] = "download_failed"
            else:
                files[k] = downloads[src].path
        else:
            files[k], reasons[k] = _resolve_local(src, map_bases if from_map[k] else column_bases)

    # 3. content keys (sha256 of the bytes + settings), then decode only what the cache lacks
    processed_dir = cache_dir / "processed"
    processed_dir.mkdir(parents=True, exist_ok=True)
    distinct_files = list(dict.fromkeys(f for f in files if f is not None))
    with ThreadPoolExecutor(max_workers=cfg.image_workers) as pool:
        digests = dict(zip(distinct_files, tqdm(pool.map(_sha256_or_reason, distinct_files), total=len(distinct_files),
                                                desc="hash images", unit="img", disable=len(distinct_files) < 50)))
        keys = {f: f"{d}-{settings.tag()}" for f, (d, _) in digests.items() if d is not None}
        todo = {}
        for f, key in keys.items():
            if key not in todo and _cached(processed_dir, key) is None:
                todo[key] = f
        with warnings.catch_warnings():
            # the guard is ours (settings.max_pixels, checked before decoding); Pillow's warning is noise here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            list(tqdm(pool.map(lambda kv: _process_into_cache(kv[1], processed_dir, kv[0], settings), todo.items()),
                      total=len(todo), desc="process images", unit="img", disable=len(todo) < 50))
    report["processed"] = len(todo)
    report["cached"] = len(set(keys.values())) - len(todo)

    # 4. place the results into the prepared folder
    image_paths: list[Optional[str]] = [None] * len(items)
    examples: dict[str, list[str]] = {}
    for k, item_id in enumerate(items["item_id"]):
        f = files[k]
        if f is not None:
            digest, why = digests[f]
            if digest is None:
                reasons[k] = why
            else:
                cached = _cached(processed_dir, keys[f])
                if cached is None:
                    raise RuntimeError(f"image cache entry {keys[f]} vanished from {processed_dir} during the run")
                if cached.suffix == ".fail":
                    reasons[k] = json.loads(cached.read_text())["reason"]
                else:
                    rel = f"{IMAGES_DIR}/{file_name_for(item_id)}{cached.suffix}"
                    (build_dir / IMAGES_DIR).mkdir(exist_ok=True)
                    _place(cached, build_dir / rel)
                    image_paths[k] = rel
        if image_paths[k] is None:
            report[reasons[k]] += 1
            if reasons[k] != "no_source":
                examples.setdefault(reasons[k], [])
                if len(examples[reasons[k]]) < MAX_EXAMPLES:
                    examples[reasons[k]].append(f"{item_id}: {sources[k]}")
    items.insert(list(items.columns).index("image") + 1, "image_path",
                 pd.Series(image_paths, index=items.index, dtype=object))
    report["attached"] = sum(p is not None for p in image_paths)
    report["missing"] = report["no_source"] + report["missing_file"]
    report["examples"] = examples
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if report["attached"] or any(report[r] for r in REASONS if r != "no_source"):
        logger.info("images: %d of %d items attached (%d decoded, %d from cache); %s", report["attached"],
                    len(items), report["processed"], report["cached"],
                    ", ".join(f"{r} {report[r]}" for r in REASONS if report[r]) or "no failures")
        for reason, ex in examples.items():
            logger.warning("images %s: %d items, e.g. %s", reason, report[reason], "; ".join(ex))
    return items, report
