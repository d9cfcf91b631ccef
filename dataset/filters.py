"""Filtering raw interactions into leave-one-out-ready sequences, counting every row that is dropped.

Steps, in order (each records the interactions, users and items it removes under its reason in ``skipped``):

1. ``below_min_rating``: keep ``rating >= min_rating``. Ignored (with a note) when the source has no ratings.
2. ``no_title``: items whose title is empty are removed with their interactions (a reranker reading titles
   cannot show them).
3. ``no_metadata``: interactions with an item absent from the items table are removed.
4. ``kcore``: iterative k-core. A round counts the interactions of every user and item on the current table
   and removes, at once, all interactions of users with fewer than ``min_uc`` and of items with fewer than
   ``min_sc``; rounds repeat until one removes nothing (``rounds`` = rounds that removed something).
5. ``too_short``: users left with fewer than 3 interactions (leave-one-out needs train + val + test) are
   removed. If that breaks the k-core, steps 4-5 repeat until both hold.

Items of the items table that no remaining interaction uses are left out of ``items.parquet`` and counted as
``no_interactions`` when no step above already counted them.

Duplicate (user, item) interactions are all kept: in sequential recommendation a re-purchase or re-watch is a
real event, and k-core counts interactions, not distinct items.

Order: each user's interactions are sorted by timestamp; equal timestamps keep the order of the source file
(the sort key is (timestamp, source row number), so the result does not depend on sort stability). Sources
without timestamps keep file order. Users are ordered by id (numerically when every id is an integer).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

logger = logging.getLogger(__name__)

MIN_SEQUENCE_LEN = 3  # leave-one-out: at least one training item plus the val and test targets


@dataclass
class FilterResult:
    """Output of ``apply_filters``.

    Args:
        interactions: filtered rows in chronological order per user.
        items: the items table restricted to items that still have interactions.
        skipped: {reason: {"interactions"/"users"/"items"/...: count}}.
        notes: facts worth writing into the manifest (ignored options, tie-break rule).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _counts(df: pd.DataFrame) -> tuple[int, int, int]:
    return len(df), df["user_id"].nunique(), df["item_id"].nunique()


def _removed(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    (n0, u0, i0), (n1, u1, i1) = _counts(before), _counts(after)
    return {"interactions": n0 - n1, "users": u0 - u1, "items": i0 - i1}


def _add(acc: dict, more: dict) -> dict:
    keys = list(acc) + [k for k in more if k not in acc]  # ordered, so the manifest reads the same each run
    return {k: acc.get(k, 0) + more.get(k, 0) for k in keys}


def sort_chronologically(inter: pd.DataFrame) -> pd.DataFrame:
    """Order rows by timestamp, ties by source row; without timestamps, keep the source order."""
    inter = inter.reset_index(drop=True)
    if "timestamp" not in inter:
        return inter
    # the explicit row-number key makes the tie-break independent of the sort algorithm's stability
    return (inter.assign(_row=range(len(inter)))
            .sort_values(["timestamp", "_row"]).drop(columns="_row").reset_index(drop=True))


def filter_min_rating(inter: pd.DataFrame, min_rating: float) -> pd.DataFrame:
    if "rating" not in inter:
        return inter
    return inter[inter["rating"] >= min_rating]


def kcore(inter: pd.DataFrame, min_uc: int, min_sc: int) -> tuple[pd.DataFrame, int]:
    """Iterative k-core (see module docstring). Returns (filtered rows, rounds that removed something)."""
    rounds = 0
    while len(inter):
        user_n = inter["user_id"].map(inter["user_id"].value_counts())
        item_n = inter["item_id"].map(inter["item_id"].value_counts())
        keep = (user_n >= min_uc) & (item_n >= min_sc)
        if keep.all():
            break
        inter = inter[keep]
        rounds += 1
    return inter, rounds


def drop_short_users(inter: pd.DataFrame, min_len: int = MIN_SEQUENCE_LEN) -> pd.DataFrame:
    n = inter["user_id"].map(inter["user_id"].value_counts())
    return inter[n >= min_len]


def apply_filters(inter: pd.DataFrame, items: pd.DataFrame, min_rating: float, min_uc: int,
                  min_sc: int) -> FilterResult:
    """Run steps 1-5 of the module docstring on raw tables (interactions in source order)."""
    skipped: dict = {}
    notes = ["duplicate (user, item) interactions are kept (sequential recommendation)"]
    inter = sort_chronologically(inter)
    notes.append("order: timestamp, ties keep source-file order" if "timestamp" in inter
                 else "order: source-file order (no timestamps)")
    start = inter

    if "rating" in inter:
        after = filter_min_rating(inter, min_rating)
        skipped["below_min_rating"] = _removed(inter, after)
        inter = after
    elif min_rating > 0:
        notes.append(f"min_rating={min_rating} ignored: the source has no ratings")
        logger.warning("min_rating=%s ignored: the source has no ratings", min_rating)

    untitled = set(items.loc[items["title"].str.strip() == "", "item_id"])
    after = inter[~inter["item_id"].isin(untitled)]
    skipped["no_title"] = _removed(inter, after)
    skipped["no_title"]["items_in_table"] = len(untitled)
    if untitled:
        logger.info("%d items have no title; dropped with %d interactions", len(untitled),
                    skipped["no_title"]["interactions"])
    inter = after

    after = inter[inter["item_id"].isin(items["item_id"])]
    skipped["no_metadata"] = _removed(inter, after)
    if skipped["no_metadata"]["interactions"]:
        logger.warning("%d interactions (%d items) have no row in the items table; dropped",
                       skipped["no_metadata"]["interactions"], skipped["no_metadata"]["items"])
    inter = after

    kc, short = {"interactions": 0, "users": 0, "items": 0, "rounds": 0}, {"interactions": 0, "users": 0,
                                                                          "items": 0}
    while True:
        after, rounds = kcore(inter, min_uc, min_sc)
        kc = _add(kc, {**_removed(inter, after), "rounds": rounds})
        inter = after
        after = drop_short_users(inter)
        removed = _removed(inter, after)
        short = _add(short, removed)
        inter = after
        if removed["interactions"] == 0:
            break
    skipped["kcore"], skipped["too_short"] = kc, short

    if inter.empty:
        raise ValueError(
            f"no interactions left after filtering (min_rating={min_rating}, min_uc={min_uc}, min_sc={min_sc}): "
            f"{ {k: v for k, v in skipped.items()} }; loosen the filters")

    used = set(inter["item_id"])
    counted = set(start["item_id"]) | untitled  # items the steps above already accounted for
    unused = items[~items["item_id"].isin(used)]
    skipped["no_interactions"] = {"items": int((~unused["item_id"].isin(counted)).sum())}
    kept_items = items[items["item_id"].isin(used)].reset_index(drop=True)
    return FilterResult(inter.reset_index(drop=True), kept_items, skipped, notes)


def _user_order(user_ids: pd.Series) -> list[str]:
    uniq = pd.unique(user_ids)
    if all(u.isdigit() for u in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def build_sequences(inter: pd.DataFrame) -> pd.DataFrame:
    """One row per user: ``user_id``, ``items`` (chronological list of item ids)."""
    groups = inter.groupby("user_id", sort=False)["item_id"].agg(list)
    order = _user_order(inter["user_id"])
    return pd.DataFrame({"user_id": order, "items": [groups[u] for u in order]})
