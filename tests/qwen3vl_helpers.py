"""Prepared folders with item images for the Qwen3-VL tests (written directly, independent of dataset/ prep).

Images: real ML-1M posters (copied from ../shared into the test's temp folder, never into the repo) and
synthetic Pillow images of other sizes, so batches mix image token counts and left padding differs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.format import ITEMS_FILE, MANIFEST_FILE, SEQUENCES_FILE, PreparedDataset, sha256_file
from tiny_models import shared_path

SYNTHETIC_SIZES = [(200, 64), (448, 300), (100, 100), (300, 448), (256, 180)]  # (width, height)


def poster_files(n: int) -> list[Path]:
    posters = sorted(shared_path("data", "ml-1m-posters", "MovieImages").glob("*.jpg"))[:n]
    if len(posters) < n:
        raise FileNotFoundError(f"need {n} posters under ../shared/data/ml-1m-posters/MovieImages")
    return posters


def write_images(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` images under ``root/images`` (posters and synthetic sizes alternating); relative paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out_dir = root / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    posters = poster_files((n + 1) // 2)
    rels = []
    for k in range(n):
        if k % 2 == 0:
            src = posters[k // 2]
            dst = out_dir / f"{k:03d}-{src.name}"
            shutil.copy(src, dst)
        else:
            w, h = SYNTHETIC_SIZES[(k // 2) % len(SYNTHETIC_SIZES)]
            dst = out_dir / f"{k:03d}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(dst)
        rels.append(dst.relative_to(root).as_posix())
    return rels


def make_vl_prepared(root: Path, n_items: int, image_paths: Optional[list[Optional[str]]] = None,
                     name: str = "vl-synthetic") -> PreparedDataset:
    """A prepared folder with ``n_items`` items (ids i000..), ``image_path`` per item (default: write_images)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if image_paths is None:
        image_paths = write_images(root, n_items)
    ids = [f"i{k:03d}" for k in range(n_items)]
    items = pa.Table.from_pydict(
        {"item_id": ids, "title": [f"Movie number {k}" for k in range(n_items)], "text": [""] * n_items,
         "image": [None] * n_items, "image_path": list(image_paths)},
        schema=pa.schema([("item_id", pa.string()), ("title", pa.string()), ("text", pa.string()),
                          ("image", pa.string()), ("image_path", pa.string())]),
    )
    pq.write_table(items, root / ITEMS_FILE)
    seqs = {f"u{u}": [ids[(u + j) % n_items] for j in range(4)] for u in range(3)}
    pq.write_table(pa.Table.from_pydict(
        {"user_id": list(seqs), "items": list(seqs.values())},
        schema=pa.schema([("user_id", pa.string()), ("items", pa.list_(pa.string()))])), root / SEQUENCES_FILE)
    manifest = {
        "config": {"dataset": name},
        "stats": {"users": len(seqs), "items": n_items, "interactions": 4 * len(seqs)},
        "hashes": {ITEMS_FILE: sha256_file(root / ITEMS_FILE), SEQUENCES_FILE: sha256_file(root / SEQUENCES_FILE)},
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return PreparedDataset(root)
