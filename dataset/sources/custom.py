"""Custom dataset loader: your own interactions and items files (``--dataset custom``).

``--interactions FILE`` (``.csv``, ``.tsv``/``.txt`` (tab-separated) or ``.parquet``; CSV/TSV need a header
row), in one of two forms:

* long form, one interaction per row::

      user_id,item_id,timestamp,rating
      u1,i10,1700000000,4
      u1,i11,1700000100,5

  ``timestamp`` (optional): integer (e.g. unix seconds) or a date/time string such as
  ``2024-05-01 12:00:00``; rows are sorted by it per user, and rows with equal timestamps keep file order.
  Without a timestamp column, file order is the chronological order. ``rating`` (optional): a number, used by
  ``--min_rating``.

* sequence form, one user per row, a column ``items`` holding that user's items in chronological order::

      user_id,items
      u1,i10 i11 i12
      u2,"[""i11"", ""i13"", ""i10""]"

  ``items`` is a space-separated string, a JSON list, or (Parquet) a list column.

``--items FILE`` (same file types): ``item_id``, ``title`` (required; items without a title are dropped and
counted), optional ``text`` (description), optional ``image`` (a path or URL, kept as given; relative paths are
read from ``--image_dir`` or the items file's folder, see ``dataset.images``), and any other columns (e.g.
``category``), which are kept in ``items.parquet``.

Ids are read as strings. Rows that cannot be parsed (wrong number of fields, empty id, non-numeric rating or
timestamp) are skipped, counted in the manifest and reported with their line numbers.
"""
from __future__ import annotations

import ast
import csv
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from dataset.raw import (MalformedRow, RawData, file_pair_result, interactions_frame, parse_float, parse_int,
                         read_records, require_file, require_id)

logger = logging.getLogger(__name__)

INTERACTIONS_EXPECTED = ("a CSV/TSV/Parquet file with columns user_id, item_id [, timestamp, rating], "
                         "or user_id, items")
ITEMS_EXPECTED = "a CSV/TSV/Parquet file with columns item_id, title [, text, image, ...]"


def read_table_rows(path: Path) -> tuple[list[str], Iterable[tuple[int, object]], str]:
    """Header and (row number, row) pairs of a CSV/TSV/Parquet file, plus the unit for messages.

    CSV/TSV rows are lists of strings checked against the header length by the caller; Parquet rows are
    dicts. Numbers are 1-based physical line numbers (CSV/TSV) or row numbers (Parquet).
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
        header = [str(c) for c in df.columns]
        return header, enumerate(df.to_dict("records"), start=1), "row"
    if suffix not in (".csv", ".tsv", ".txt"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv/.txt (tab) or .parquet")
    delimiter = "," if suffix == ".csv" else "\t"
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file; expected {INTERACTIONS_EXPECTED}") from None
        rows = [(reader.line_num, r) for r in reader]
    return header, rows, "line"


def _row_dict(row, header: list[str]) -> Optional[dict]:
    if isinstance(row, dict):
        return row
    if not any(str(c).strip() for c in row):
        return None  # blank line
    if len(row) != len(header):
        raise MalformedRow(f"expected {len(header)} fields, got {len(row)}")
    return dict(zip(header, row))


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def _parse_items_value(v) -> list[str]:
    """A user's item list: list/array, JSON or Python list string, or space-separated string."""
    if _is_missing(v):
        return []
    if not isinstance(v, str):
        try:
            return [str(x).strip() for x in v]
        except TypeError:
            return [str(v)]
    s = v.strip()
    if s.startswith("["):
        try:
            seq = json.loads(s)
        except json.JSONDecodeError:
            try:
                seq = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                raise MalformedRow("items looks like a list but does not parse") from None
        return [str(x).strip() for x in seq]
    return s.split()


def _timestamp_parser(rows: list[tuple[int, object]], header: list[str]):
    """Integer timestamps when every present value is numeric, else date strings parsed by pandas."""
    idx = header.index("timestamp")
    values = [r.get("timestamp") if isinstance(r, dict) else (r[idx] if len(r) > idx else "") for _, r in rows]
    present = [v for v in values if not _is_missing(v)]
    numeric = pd.to_numeric(pd.Series(present, dtype=object), errors="coerce")
    if numeric.notna().all():
        return lambda v: parse_int(str(v), "timestamp")

    def parse_date(v) -> int:
        ts = pd.to_datetime(str(v), errors="coerce")
        if pd.isna(ts):
            raise MalformedRow(f"timestamp {v!r} is neither an integer nor a date")
        # seconds since the epoch (naive times read as UTC) keep the column integer-typed for every input
        return int(ts.timestamp())

    return parse_date


def load_interactions(path: Path) -> tuple[pd.DataFrame, int, int, str]:
    """Returns (interactions, malformed rows, users with an empty sequence, form)."""
    header, rows, unit = read_table_rows(path)
    rows = list(rows)
    cols = set(header)
    if "user_id" not in cols or not ({"item_id", "items"} & cols):
        raise ValueError(f"{path}: columns {header} do not match; expected {INTERACTIONS_EXPECTED}")

    if "item_id" not in cols:  # sequence form
        n_empty = 0

        def parse_seq(row) -> Optional[tuple]:
            nonlocal n_empty
            rec = _row_dict(row, header)
            if rec is None:
                return None
            uid = require_id(str(rec["user_id"]) if not _is_missing(rec["user_id"]) else "", "user_id")
            seq = _parse_items_value(rec["items"])
            if not seq:
                n_empty += 1  # counted, not malformed: the user simply has no history
                return None
            if any(not x for x in seq):
                raise MalformedRow("empty item id in items")
            return uid, seq

        seqs, n_bad = read_records(rows, parse_seq, str(path), "rows", unit)
        records = [(u, i) for u, seq in seqs for i in seq]
        return interactions_frame(records, ("user_id", "item_id")), n_bad, n_empty, "sequence"

    has_ts, has_rating = "timestamp" in cols, "rating" in cols
    ts_parse = _timestamp_parser(rows, header) if has_ts else None
    out_cols = ("user_id", "item_id") + (("timestamp",) if has_ts else ()) + (("rating",) if has_rating else ())

    def parse_long(row) -> Optional[tuple]:
        rec = _row_dict(row, header)
        if rec is None:
            return None
        uid = require_id("" if _is_missing(rec["user_id"]) else str(rec["user_id"]), "user_id")
        iid = require_id("" if _is_missing(rec["item_id"]) else str(rec["item_id"]), "item_id")
        out = [uid, iid]
        if has_ts:
            if _is_missing(rec["timestamp"]):
                raise MalformedRow("empty timestamp")
            out.append(ts_parse(rec["timestamp"]))
        if has_rating:
            if _is_missing(rec["rating"]):
                raise MalformedRow("empty rating")
            out.append(parse_float(str(rec["rating"]), "rating"))
        return tuple(out)

    records, n_bad = read_records(rows, parse_long, str(path), "rows", unit)
    return interactions_frame(records, out_cols), n_bad, 0, "long"


def load_items(path: Path) -> tuple[pd.DataFrame, int]:
    header, rows, unit = read_table_rows(path)
    if "item_id" not in header or "title" not in header:
        raise ValueError(f"{path}: columns {header} do not match; expected {ITEMS_EXPECTED}")

    def parse(row) -> Optional[tuple]:
        rec = _row_dict(row, header)
        if rec is None:
            return None
        rec = dict(rec)
        rec["item_id"] = require_id("" if _is_missing(rec["item_id"]) else str(rec["item_id"]), "item_id")
        return (rec,)

    records, n_bad = read_records(rows, parse, str(path), "rows", unit)
    return pd.DataFrame([r[0] for r in records], columns=header), n_bad


def load_custom(cfg, assets_dir: Path) -> RawData:
    """Read ``cfg.interactions`` and ``cfg.items`` (formats in the module docstring)."""
    if not cfg.interactions or not cfg.items:
        raise ValueError("--dataset custom needs --interactions FILE and --items FILE")
    inter_path = require_file(Path(cfg.interactions), INTERACTIONS_EXPECTED)
    item_path = require_file(Path(cfg.items), ITEMS_EXPECTED)
    inter, n_bad_inter, n_empty, form = load_interactions(inter_path)
    items, n_bad_items = load_items(item_path)
    extra = {"empty_history": {"users": n_empty}} if n_empty else None
    return file_pair_result(inter, items, inter_path, item_path, n_bad_inter, n_bad_items, extra,
                            read_note=f" ({form} form)")
