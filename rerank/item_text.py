"""What each rerank mode shows of an item: (title, detail) pairs, and image files for ``raw_image``.

- ``text``: title + the dataset's own text (description / genres / categories).
- ``semantic_summary_small`` (text model) and ``semantic_summary`` (Qwen3-VL): title + the item's semantic
  summary from ``<prepared>/summaries.parquet``.
- ``caption`` (Qwen3-VL): title + the item's short caption (same table, column ``caption``).
- ``raw_image`` (Qwen3-VL): title, with the item's prepared image (``items.image_path``) as an image input.

The summaries table (written by the data-prep summariser) has columns ``item_id``, ``summary`` and optionally
``caption``; its Parquet metadata key ``dataset_hash`` must equal the prepared dataset's content hash, so a
table from another dataset (or an older preparation) is refused rather than silently misapplied. Items without
a summary / caption / image fall back to title-only and are counted.
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
    elif mode in ("semantic_summary_small", "semantic_summary", "caption"):
        column = "caption" if mode == "caption" else "summary"
        table = read_summaries(prepared)
        if column not in table:
            raise ValueError(f"mode {mode!r} needs a {column!r} column in {prepared.root / SUMMARIES_FILE}")
        s = table.set_index("item_id")[column].fillna("").astype(str)
        details = s.reindex(items.index).fillna("")
    elif mode == "raw_image":
        details = pd.Series("", index=items.index)  # the image is the detail
    else:
        raise ValueError(f"mode {mode!r} has no item view")
    return {i: (t, d) for i, t, d in zip(items.index, titles, details)}


def item_images(prepared: PreparedDataset) -> dict[str, str]:
    """{item_id: absolute image file} for items with a prepared image (``items.image_path``)."""
    items = prepared.items
    if "image_path" not in items:
        return {}
    paths = items["image_path"].dropna()
    return {i: str(prepared.root / p) for i, p in zip(paths.index, paths) if isinstance(p, str) and p}


def supported_modes(prepared: PreparedDataset) -> list[str]:
    """The modes this prepared dataset has the data for (what ``--mode all`` runs)."""
    modes = ["text"]
    if (prepared.root / SUMMARIES_FILE).is_file():
        table = read_summaries(prepared)
        if "summary" in table and table["summary"].fillna("").astype(bool).any():
            modes += ["semantic_summary_small", "semantic_summary"]
        if "caption" in table and table["caption"].fillna("").astype(bool).any():
            modes.append("caption")
    if item_images(prepared):
        modes.append("raw_image")
    return modes
