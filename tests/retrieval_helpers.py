"""Builders of prepared-dataset folders for the retrieval tests (independent of dataset/ code paths).

They write the files of the ``dataset.format`` contract directly, so the retrieval tests do not depend
on the data-preparation code being finished.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.format import ITEMS_FILE, MANIFEST_FILE, SEQUENCES_FILE, PreparedDataset, sha256_file


def make_prepared(
    root: Path, sequences: dict[str, list[str]], titles: Optional[dict[str, str]] = None, name: str = "synthetic"
) -> PreparedDataset:
    """Write items/sequences parquet + manifest.json under ``root`` and open it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    item_ids = sorted({i for seq in sequences.values() for i in seq} | set(titles or {}))
    titles = titles or {}
    items = pa.Table.from_pydict(
        {
            "item_id": item_ids,
            "title": [titles.get(i, f"item {i}") for i in item_ids],
            "text": ["" for _ in item_ids],
            "image": [None for _ in item_ids],
        },
        schema=pa.schema([("item_id", pa.string()), ("title", pa.string()), ("text", pa.string()),
                          ("image", pa.string())]),
    )
    pq.write_table(items, root / ITEMS_FILE)
    seqs = pa.Table.from_pydict(
        {"user_id": list(sequences), "items": [list(s) for s in sequences.values()]},
        schema=pa.schema([("user_id", pa.string()), ("items", pa.list_(pa.string()))]),
    )
    pq.write_table(seqs, root / SEQUENCES_FILE)
    manifest = {
        "config": {"dataset": name},
        "stats": {"users": len(sequences), "items": len(item_ids),
                  "interactions": sum(len(s) for s in sequences.values())},
        "hashes": {ITEMS_FILE: sha256_file(root / ITEMS_FILE), SEQUENCES_FILE: sha256_file(root / SEQUENCES_FILE)},
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return PreparedDataset(root)


def ml100k_sequences(ml100k_dir: Path, k_core: int = 5) -> dict[str, list[str]]:
    """Time-sorted (stable) ML-100k sequences from ``u.data`` after an iterative k-core on users and items."""
    path = Path(ml100k_dir) / "u.data"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: ../shared/data/ml-100k must sit beside the repository")
    df = pd.read_csv(path, sep="\t", names=["user_id", "item_id", "rating", "ts"], dtype=str)
    df["ts"] = df["ts"].astype(int)
    while k_core > 0:
        uc = df["user_id"].map(df["user_id"].value_counts())
        ic = df["item_id"].map(df["item_id"].value_counts())
        keep = (uc >= k_core) & (ic >= k_core)
        if keep.all():
            break
        df = df[keep]
    df = df.sort_values("ts", kind="stable")
    return {u: g["item_id"].tolist() for u, g in df.groupby("user_id", sort=True)}
