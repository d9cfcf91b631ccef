"""Read and validate an external candidates file (the reranker's ``--candidates FILE``).

Accepted shapes (Parquet ``.parquet``/``.pq``, or CSV ``.csv``/``.tsv``; ids are always read as strings):

* list form: ``user_id, candidates[, scores]``. In Parquet ``candidates`` is a list column; in CSV it is
  a JSON list (``["1", "2"]``) or ids separated by spaces and/or commas (``1 2 3`` / ``1,2,3``).
* long form: ``user_id, item_id[, rank | score]``, one row per candidate. Rows are ordered by ``rank``
  when present (stable), otherwise kept in file order.

Without scores, ``scores`` is filled with NaN: we do not invent numbers; the list order is the ranking.
Users of the split that are missing from the file are allowed (they count as misses in evaluation);
their count is logged and stored in ``df.attrs["missing_users"]``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from dataset.format import PreparedDataset, split_example

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5


def _examples(values: Iterable[str], what: str, path: Path) -> str:
    values = list(dict.fromkeys(values))  # unique, first-seen order
    shown = ", ".join(repr(v) for v in values[:MAX_EXAMPLES])
    return f"{path}: {len(values)} {what} not in the prepared dataset, e.g. {shown}"


def _parse_list_cell(cell, user_id: str) -> list[str]:
    """A Parquet list, a JSON list string, or a space/comma separated string -> list of id strings."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(x) for x in cell]
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    text = str(cell).strip()
    if text.startswith("["):
        try:
            return [str(x) for x in json.loads(text)]
        except json.JSONDecodeError as err:
            raise ValueError(f"user {user_id!r}: candidates {text[:60]!r} is not a valid JSON list ({err})") from None
    return [t for t in re.split(r"[\s,]+", text) if t]


def _parse_scores(cell, n: int, user_id: str) -> list[float]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return [float("nan")] * n
    if isinstance(cell, str):
        text = cell.strip()
        values = json.loads(text) if text.startswith("[") else [t for t in re.split(r"[\s,]+", text) if t]
    else:
        values = list(cell)
    scores = [float(x) for x in values]
    if len(scores) != n:
        raise ValueError(f"user {user_id!r}: {len(scores)} scores for {n} candidates")
    return scores


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    raise ValueError(f"{path}: unsupported candidates file type {suffix!r} (use .parquet, .pq, .csv or .tsv)")


def _from_long(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    df = df.copy()
    df["item_id"] = df["item_id"].astype(str)
    if "rank" in df.columns:
        df["rank"] = pd.to_numeric(df["rank"], errors="raise")
        df = df.sort_values(["user_id", "rank"], kind="stable")
    has_score = "score" in df.columns
    rows = []
    for uid, group in df.groupby("user_id", sort=False):
        cands = group["item_id"].tolist()
        scores = (pd.to_numeric(group["score"], errors="raise").astype(float).tolist() if has_score
                  else [float("nan")] * len(cands))
        rows.append((uid, cands, scores))
    return pd.DataFrame(rows, columns=["user_id", "candidates", "scores"])


def _from_list(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    dup_users = df["user_id"][df["user_id"].duplicated()].tolist()
    if dup_users:
        raise ValueError(f"{path}: user {dup_users[0]!r} has more than one row ({len(set(dup_users))} such users)")
    has_scores = "scores" in df.columns
    rows = []
    for rec in df.to_dict("records"):
        uid = rec["user_id"]
        cands = _parse_list_cell(rec["candidates"], uid)
        scores = _parse_scores(rec["scores"] if has_scores else None, len(cands), uid)
        rows.append((uid, cands, scores))
    return pd.DataFrame(rows, columns=["user_id", "candidates", "scores"])


def read_candidates(path: str | Path, prepared: PreparedDataset, split: str) -> pd.DataFrame:
    """Load a candidates file and validate it against ``prepared``.

    Args:
        path: Parquet or CSV file in list or long form (see the module docstring).
        prepared: the dataset the ids must belong to.
        split: "val" or "test"; used to count the split's users missing from the file.
    Returns:
        DataFrame[user_id: str, candidates: list[str], scores: list[float]] in file order of users;
        ``attrs`` holds ``missing_users`` (int) and ``has_scores`` (bool).
    Raises:
        ValueError: unknown user or item ids (up to 5 examples + total count), a user listed twice,
            an empty list or a duplicate item within a user's list (naming the user), bad columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"candidates file {path} not found")
    raw = _read_table(path)
    if "user_id" not in raw.columns:
        raise ValueError(f"{path}: needs a 'user_id' column, found {list(raw.columns)}")
    raw["user_id"] = raw["user_id"].astype(str)
    if "candidates" in raw.columns:
        df, has_scores = _from_list(raw, path), "scores" in raw.columns
    elif "item_id" in raw.columns:
        df, has_scores = _from_long(raw, path), "score" in raw.columns
    else:
        raise ValueError(f"{path}: needs a 'candidates' column (list form) or an 'item_id' column (long form), "
                         f"found {list(raw.columns)}")

    known_users = set(prepared.sequences["user_id"].astype(str))
    unknown_users = [u for u in df["user_id"] if u not in known_users]
    if unknown_users:
        raise ValueError(_examples(unknown_users, "user ids", path))
    known_items = set(prepared.items["item_id"].astype(str))
    unknown_items = [i for cands in df["candidates"] for i in cands if i not in known_items]
    if unknown_items:
        raise ValueError(_examples(unknown_items, "item ids", path))
    for uid, cands in zip(df["user_id"], df["candidates"]):
        if not cands:
            raise ValueError(f"{path}: user {uid!r} has an empty candidate list")
        if len(set(cands)) != len(cands):
            dup = next(c for i, c in enumerate(cands) if c in cands[:i])
            raise ValueError(f"{path}: user {uid!r} lists item {dup!r} more than once")

    split_users = [split_example(str(u), list(s), split).user_id
                   for u, s in zip(prepared.sequences["user_id"], prepared.sequences["items"])]
    missing = len(set(split_users) - set(df["user_id"]))
    if missing:
        log.warning("%s: %d of %d %s users have no candidates (they count as misses)", path, missing,
                    len(split_users), split)
    df.attrs["missing_users"] = missing
    df.attrs["has_scores"] = has_scores
    return df
