"""What each rerank mode shows of an item: (title, detail) pairs.

- ``text``: title + the dataset's own text (description / genres / categories).
- ``semantic_summary_small``: title + the item's semantic summary from ``<prepared>/summaries.parquet``.

The summaries table (written by the data-prep summariser) has columns ``item_id``, ``summary`` and optionally
``caption``; its Parquet metadata key ``dataset_hash`` must equal the prepared dataset's content hash, so a
table from another dataset (or an older preparation) is refused rather than silently misapplied. Items without
a summary fall back to title-only and are counted.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from dataset.format import PreparedDataset

SUMMARIES_FILE = "summaries.parquet"
DATASET_HASH_KEY = b"dataset_hash"


class SummaryMismatchError(ValueError):
    pass


def read_summaries(prepared: PreparedDataset, path: str | Path | None = None) -> pd.DataFrame:
    path = Path(path) if path else prepared.root / SUMMARIES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: mode semantic_summary_small needs item summaries "
            f"(generate them with data_prepare.py, or write item_id/summary columns there)"
        )
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    got = meta.get(DATASET_HASH_KEY, b"").decode()
    if got != prepared.content_hash:
        raise SummaryMismatchError(
            f"{path} was written for dataset hash {got or '(none)'!r}, but {prepared.root} has "
            f"{prepared.content_hash!r}: the summaries belong to another dataset or preparation; regenerate them"
        )
    df = table.to_pandas()
    missing = {"item_id", "summary"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    unknown = set(df["item_id"]) - set(prepared.items.index)
    if unknown:
        raise SummaryMismatchError(
            f"{path} names {len(unknown)} items unknown to {prepared.root}, e.g. {sorted(unknown)[:5]}"
        )
    return df


def write_summaries(prepared: PreparedDataset, df: pd.DataFrame, path: str | Path | None = None) -> Path:
    """Write a summaries table stamped with the dataset hash (atomic replace)."""
    import pyarrow as pa

    path = Path(path) if path else prepared.root / SUMMARIES_FILE
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), DATASET_HASH_KEY: prepared.content_hash.encode()})
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def item_texts(prepared: PreparedDataset, mode: str) -> dict[str, tuple[str, str]]:
    """{item_id: (title, detail)} for the mode; detail '' means the item is shown title-only."""
    items = prepared.items
    titles = items["title"].fillna("").astype(str)
    if mode == "text":
        details = items["text"].fillna("").astype(str) if "text" in items else pd.Series("", index=items.index)
    elif mode == "semantic_summary_small":
        s = read_summaries(prepared).set_index("item_id")["summary"].fillna("").astype(str)
        details = s.reindex(items.index).fillna("")
    else:
        raise ValueError(f"mode {mode!r} has no text view here")
    return {i: (t, d) for i, t, d in zip(items.index, titles, details)}
