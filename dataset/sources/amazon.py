"""Amazon 2014 (McAuley) loader for any category: raw review/rating files or the 5-core sequence form.

Files looked for in ``--data_root`` (``<Cat>`` = Beauty for ``beauty``, Video_Games for ``games``, the official
2014 spelling for other known categories, else the name title-cased with underscores):

interactions, first found wins:
  1. ``reviews_<Cat>_5.json.gz``  one JSON object (or Python literal) per line: reviewerID, asin, overall,
     unixReviewTime. The 5-core file comes first because it is the benchmark most papers report on.
  2. ``reviews_<Cat>.json.gz``    same fields, all reviews.
  3. ``ratings_<Cat>.csv``        ``user,item,rating,timestamp``, no header.
  4. ``user_sequence.txt``        ``reviewerID ASIN ASIN ...`` per line, chronological (P5 / S3-Rec form);
     no timestamps or ratings, so file order is kept.
items, first found wins:
  1. ``meta_<Cat>.json.gz``       asin, title, description, imUrl, categories, brand, price.
  2. ``Amazon_<Cat>.item`` / ``<Cat>.item``  RecBole atomic file: tab-separated, ``"``-quoted (titles may hold
     tabs or newlines), header ``name:type``; text is built from categories, brand and price.
Titles and texts are HTML-unescaped (``&amp;`` -> ``&``) because the raw metadata is scraped HTML.
"""
from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from dataset.raw import (MalformedRow, RawData, file_pair_result, interactions_frame, numbered_lines, parse_float,
                         parse_int, read_records, require_id)

logger = logging.getLogger(__name__)

ALIASES = {"beauty": "Beauty", "games": "Video_Games"}
# The 24 categories of the 2014 release, so that "health_and_personal_care" maps to the real file names.
CATEGORIES_2014 = (
    "Books", "Electronics", "Movies_and_TV", "CDs_and_Vinyl", "Clothing_Shoes_and_Jewelry", "Home_and_Kitchen",
    "Kindle_Store", "Sports_and_Outdoors", "Cell_Phones_and_Accessories", "Health_and_Personal_Care",
    "Toys_and_Games", "Video_Games", "Tools_and_Home_Improvement", "Beauty", "Apps_for_Android",
    "Office_Products", "Pet_Supplies", "Automotive", "Grocery_and_Gourmet_Food", "Patio_Lawn_and_Garden",
    "Baby", "Digital_Music", "Musical_Instruments", "Amazon_Instant_Video",
)


def category_file_name(name: str) -> str:
    """beauty -> Beauty, games -> Video_Games, health_and_personal_care -> Health_and_Personal_Care."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in ALIASES:
        return ALIASES[key]
    for cat in CATEGORIES_2014:
        if cat.lower() == key:
            return cat
    return "_".join(part.capitalize() for part in key.split("_") if part)


def is_known_category(name: str) -> bool:
    return category_file_name(name) in CATEGORIES_2014


def interaction_candidates(cat: str) -> list[str]:
    return [f"reviews_{cat}_5.json.gz", f"reviews_{cat}.json.gz", f"ratings_{cat}.csv", "user_sequence.txt"]


def item_candidates(cat: str) -> list[str]:
    return [f"meta_{cat}.json.gz", f"Amazon_{cat}.item", f"{cat}.item"]


def find_files(root: Path, cat: str) -> tuple[Optional[Path], Optional[Path]]:
    """First existing interactions file and first existing items file (None when absent)."""
    inter = next((root / n for n in interaction_candidates(cat) if (root / n).is_file()), None)
    items = next((root / n for n in item_candidates(cat) if (root / n).is_file()), None)
    return inter, items


def _gz_lines(path: Path) -> Iterable[tuple[int, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        yield from enumerate(f, start=1)


def _parse_obj(line: str) -> Optional[dict]:
    """One record per line: strict JSON, else a Python literal (the 2014 meta files use ``eval`` syntax)."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise MalformedRow(f"neither JSON nor a Python literal ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise MalformedRow(f"expected an object, got {type(obj).__name__}")
    return obj


def _parse_review(line: str) -> Optional[tuple]:
    obj = _parse_obj(line)
    if obj is None:
        return None
    try:
        user, item, rating, ts = obj["reviewerID"], obj["asin"], obj["overall"], obj["unixReviewTime"]
    except KeyError as e:
        raise MalformedRow(f"missing field {e.args[0]!r}") from None
    return (require_id(str(user), "reviewerID"), require_id(str(item), "asin"),
            parse_int(str(ts), "unixReviewTime"), parse_float(str(rating), "overall"))


def _parse_rating_csv(line: str) -> Optional[tuple]:
    if not line.strip():
        return None
    parts = next(csv.reader([line]))
    if len(parts) != 4:
        raise MalformedRow(f"expected 4 comma-separated fields, got {len(parts)}")
    user, item, rating, ts = parts
    return (require_id(user, "user"), require_id(item, "item"),
            parse_int(ts, "timestamp"), parse_float(rating, "rating"))


def _read_sequences(path: Path) -> tuple[pd.DataFrame, int]:
    def parse(line: str) -> Optional[list]:
        parts = line.split()
        if not parts:
            return None
        if len(parts) < 2:
            raise MalformedRow("a user id with no items")
        return parts

    seqs, n_bad = read_records(numbered_lines(path), parse, str(path), "sequence lines")
    users = [s[0] for s in seqs for _ in s[1:]]
    items = [i for s in seqs for i in s[1:]]
    return interactions_frame(list(zip(users, items)), ("user_id", "item_id")), n_bad


def _read_interactions(path: Path) -> tuple[pd.DataFrame, int]:
    name = path.name
    if name == "user_sequence.txt":
        return _read_sequences(path)
    if name.endswith(".json.gz"):
        records, n_bad = read_records(_gz_lines(path), _parse_review, str(path), "review lines")
    else:
        records, n_bad = read_records(numbered_lines(path), _parse_rating_csv, str(path), "rating lines")
    return interactions_frame(records, ("user_id", "item_id", "timestamp", "rating")), n_bad


def _clean(s) -> str:
    return html.unescape(str(s)).strip() if s is not None else ""


def _categories_text(cats) -> str:
    """meta: [['Beauty', 'Makeup', 'Face']]; RecBole: "'Beauty', 'Makeup'" -> "Beauty > Makeup > Face"."""
    if isinstance(cats, str):
        try:
            cats = ast.literal_eval(f"[{cats}]")
        except (ValueError, SyntaxError):
            return _clean(cats)
    if cats and all(isinstance(c, (list, tuple)) for c in cats):
        cats = cats[0]  # the first path is the main one; the others repeat its prefix
    return " > ".join(_clean(c) for c in cats if _clean(c))


def _item_text(categories: str, brand: str, price: str, description: str = "") -> str:
    parts = []
    if categories:
        parts.append(f"Categories: {categories}.")
    if brand:
        parts.append(f"Brand: {brand}.")
    if price:
        parts.append(f"Price: ${price}.")
    if description:
        parts.append(description)
    return " ".join(parts)


def _read_meta(path: Path) -> tuple[pd.DataFrame, int]:
    def parse(line: str) -> Optional[tuple]:
        obj = _parse_obj(line)
        if obj is None:
            return None
        if "asin" not in obj:
            raise MalformedRow("missing field 'asin'")
        cats = _categories_text(obj.get("categories") or [])
        brand, price = _clean(obj.get("brand", "")), _clean(obj.get("price", ""))
        text = _item_text(cats, brand, price, _clean(obj.get("description", "")))
        return (require_id(str(obj["asin"]), "asin"), _clean(obj.get("title", "")), text,
                obj.get("imUrl") or None, cats, brand, price)

    records, n_bad = read_records(_gz_lines(path), parse, str(path), "meta lines")
    cols = ["item_id", "title", "text", "image", "categories", "brand", "price"]
    return pd.DataFrame.from_records(records, columns=cols), n_bad


def _read_recbole_items(path: Path) -> tuple[pd.DataFrame, int]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quotechar='"')
        try:
            header = [h.split(":", 1)[0] for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file; expected a RecBole header like 'item_id:token\\ttitle:token'")
        if "item_id" not in header:
            raise ValueError(f"{path}: header {header} has no item_id column")
        # reader.line_num is the physical line where a record ends, so quoted newlines keep numbers right
        rows = [(reader.line_num, r) for r in reader]

    def parse(row: list) -> Optional[tuple]:
        if not any(c.strip() for c in row):
            return None
        if len(row) != len(header):
            raise MalformedRow(f"expected {len(header)} tab-separated fields, got {len(row)}")
        rec = dict(zip(header, row))
        cats = _categories_text(rec.get("categories", ""))
        brand, price = _clean(rec.get("brand", "")), _clean(rec.get("price", ""))
        return (require_id(rec["item_id"], "item_id"), _clean(rec.get("title", "")),
                _item_text(cats, brand, price), None, cats, brand, price)

    records, n_bad = read_records(rows, parse, str(path), "item rows")
    cols = ["item_id", "title", "text", "image", "categories", "brand", "price"]
    return pd.DataFrame.from_records(records, columns=cols), n_bad


def load_amazon(cfg, assets_dir: Path) -> RawData:
    """Load an Amazon 2014 category from whichever supported files ``cfg.data_root`` holds."""
    cat = category_file_name(cfg.dataset)
    looked_for = (f"interactions: one of {interaction_candidates(cat)}; items: one of {item_candidates(cat)}")
    if cfg.data_root is None:
        raise FileNotFoundError(
            f"dataset {cfg.dataset!r} (Amazon 2014 '{cat}') needs --data_root DIR holding {looked_for}")
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_root {root} not found: expected a folder holding {looked_for}")
    inter_path, item_path = find_files(root, cat)
    if inter_path is None or item_path is None:
        missing = "an interactions file" if inter_path is None else "an items file"
        raise FileNotFoundError(f"{root}: no {missing} for Amazon '{cat}'; looked for {looked_for}")
    logger.info("Amazon %s: interactions from %s, items from %s", cat, inter_path.name, item_path.name)

    inter, n_bad_inter = _read_interactions(inter_path)
    if item_path.name.endswith(".json.gz"):
        items, n_bad_items = _read_meta(item_path)
    else:
        items, n_bad_items = _read_recbole_items(item_path)
    return file_pair_result(inter, items, inter_path, item_path, n_bad_inter, n_bad_items)
