"""The raw-data boundary every source loader returns, and tolerant line-by-line parsing.

A loader turns one source's files into two tables plus bookkeeping:

* ``interactions``: ``user_id`` (str), ``item_id`` (str), optional ``timestamp`` (int64), optional
  ``rating`` (float64). Rows are in source-file order; chronological sorting happens in ``dataset.filters``.
* ``items``: ``item_id`` (str), ``title`` (str, may be empty: such items are dropped and counted later),
  ``text`` (str, "" when none), ``image`` (str or None), optional extra columns (category, brand, ...).

Malformed rows are never dropped silently: ``read_records`` counts them, logs a warning with up to three
examples (file and line number), and raises when every row of a file is malformed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pandas as pd

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")
ITEM_COLUMNS = ("item_id", "title", "text", "image")
MAX_EXAMPLES = 3


class MalformedRow(ValueError):
    """Raised by a row parser for one bad row; the caller counts it and moves on."""


@dataclass
class RawData:
    """What a source loader returns.

    Args:
        interactions: user_id, item_id (+ timestamp, rating when the source has them), source-file order.
        items: item_id, title, text, image (+ optional extra columns).
        skipped: counts of rows dropped while reading, e.g. ``{"malformed_rows": {"interactions": 2}}``.
        notes: human-readable facts for the manifest (which files were read, what was ignored).
        inputs: raw files read; their size/mtime go into the manifest so a changed file triggers a rebuild.
        write_assets: optional callback ``(final_items, out_dir)`` that writes files the items refer to
            (the sample dataset's images), called once filtering has decided which items stay.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    write_assets: Optional[Callable[[pd.DataFrame, Path], None]] = None


def file_pair_result(inter: pd.DataFrame, items: pd.DataFrame, inter_path: Path, item_path: Path,
                     n_bad_inter: int, n_bad_items: int, extra_skipped: Optional[dict] = None,
                     read_note: str = "") -> "RawData":
    """RawData for sources read from one interactions file and one items file (Amazon, custom):
    deduplicated items, malformed-row counts, and the no-timestamp note."""
    items, n_dup = items_frame(items, str(item_path))
    notes = [f"read {inter_path}{read_note} and {item_path}"]
    if "timestamp" not in inter:
        notes.append(f"{inter_path.name} has no timestamps: each user's file order is the chronological order")
    skipped = {"malformed_rows": {"interactions": n_bad_inter, "items": n_bad_items}, **(extra_skipped or {})}
    if n_dup:
        skipped["duplicate_item_rows"] = {"items": n_dup}
    return RawData(inter, items, skipped=skipped, notes=notes, inputs=[inter_path, item_path])


def read_records(
    lines: Iterable[tuple[int, Any]],
    parse: Callable[[Any], Optional[tuple]],
    source: str,
    what: str = "rows",
    unit: str = "line",
) -> tuple[list[tuple], int]:
    """Parse numbered lines with ``parse``; count, log and skip the ones that raise ``MalformedRow``.

    ``parse`` returns a tuple, or None for a line to ignore silently (blank lines only).
    Returns (records, number_malformed). Raises ValueError when no line parses but some were malformed.
    """
    records: list[tuple] = []
    bad: list[tuple[int, str, str]] = []
    n_bad = 0
    for lineno, line in lines:
        try:
            rec = parse(line)
        except MalformedRow as e:
            n_bad += 1
            if len(bad) < MAX_EXAMPLES:
                text = line if isinstance(line, str) else "\t".join(map(str, line))  # csv rows are lists
                bad.append((lineno, text.rstrip("\r\n")[:200], str(e)))
            continue
        if rec is not None:
            records.append(rec)
    if n_bad:
        examples = "; ".join(f"{unit} {n}: {txt!r} ({why})" for n, txt, why in bad)
        if not records:
            raise ValueError(f"{source}: all {n_bad} {what} are malformed, e.g. {examples}")
        logger.warning("%s: skipped %d malformed %s, e.g. %s", source, n_bad, what, examples)
    return records, n_bad


def numbered_lines(path: Path, encoding: str = "utf-8") -> Iterable[tuple[int, str]]:
    """Yield (1-based line number, line) for a text file."""
    with open(path, encoding=encoding, newline="") as f:
        yield from enumerate(f, start=1)


def parse_int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)  # "881250949.0" is a valid timestamp written by some exporters
        except ValueError:
            raise MalformedRow(f"{name} {value!r} is not an integer") from None
        if not f.is_integer():
            raise MalformedRow(f"{name} {value!r} is not an integer") from None
        return int(f)


def parse_float(value: str, name: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise MalformedRow(f"{name} {value!r} is not a number") from None
    if v != v:  # NaN
        raise MalformedRow(f"{name} is NaN")
    return v


def require_id(value: str, name: str) -> str:
    v = value.strip()
    if not v:
        raise MalformedRow(f"empty {name}")
    return v


def interactions_frame(records: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    """Build the interactions table with the documented dtypes from parsed tuples."""
    df = pd.DataFrame.from_records(records, columns=list(columns))
    df["user_id"] = df["user_id"].astype(str)
    df["item_id"] = df["item_id"].astype(str)
    if "timestamp" in df:
        df["timestamp"] = df["timestamp"].astype("int64")
    if "rating" in df:
        df["rating"] = df["rating"].astype("float64")
    return df


def items_frame(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, int]:
    """Normalise an items table: string ids/titles/texts, image None when empty; drop duplicate ids.

    Returns (items, number of duplicate item rows dropped). The first row of a duplicated id wins.
    """
    missing = [c for c in ("item_id", "title") if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: items table lacks column(s) {missing}; has {list(df.columns)}")
    df = df.copy()
    df["item_id"] = df["item_id"].astype(str).str.strip()
    df["title"] = df["title"].fillna("").astype(str).str.strip()
    df["text"] = df["text"].fillna("").astype(str).str.strip() if "text" in df else ""
    if "image" in df:
        img = df["image"].astype(object)
        df["image"] = [None if (v is None or v != v or str(v).strip() == "") else str(v) for v in img]
    else:
        df["image"] = None
    df["image"] = df["image"].astype(object)
    dup = df["item_id"].duplicated(keep="first")
    n_dup = int(dup.sum())
    if n_dup:
        logger.warning("%s: %d duplicate item_id rows; kept the first of each, e.g. %s",
                       source, n_dup, list(df.loc[dup, "item_id"].head(MAX_EXAMPLES)))
        df = df[~dup]
    front = list(ITEM_COLUMNS)
    df = df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)
    return df, n_dup


def require_file(path: Path, expected: str) -> Path:
    """Fail early with the path and what should be there."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected {expected}")
    return path
