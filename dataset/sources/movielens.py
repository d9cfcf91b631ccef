"""MovieLens 100K loader: ``u.data`` (ratings) + ``u.item`` (titles, release dates, genre flags).

``u.data``: ``user \\t item \\t rating \\t unix_ts`` per line. ``u.item``: ``|``-separated, latin-1, columns
id | title | release date | video release date | IMDb URL | 19 genre flags (names in ``u.genre``).
Item text is ``"Genres: Action, Comedy. Released: 01-Jan-1995"``. Without ``--data_root`` the official
archive is downloaded into ``data/raw/`` (which needs internet; offline this fails and says to pass
``--data_root``).
"""
from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from dataset.raw import (MalformedRow, RawData, interactions_frame, items_frame, numbered_lines, parse_float,
                         parse_int, read_records, require_file, require_id)

logger = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# u.genre ships with the archive; this copy is only used when it is missing (the order is the flag order).
DEFAULT_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                  "Thriller", "War", "Western")
N_ITEM_FIELDS = 5 + len(DEFAULT_GENRES)


def download_ml100k(dest_root: Path, url: str = ML100K_URL, timeout: float = 30.0) -> Path:
    """Download and unpack the ML-100K archive into ``dest_root/ml-100k``; reuse it when already there."""
    target = dest_root / "ml-100k"
    if (target / "u.data").is_file() and (target / "u.item").is_file():
        logger.info("using previously downloaded %s", target)
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    archive = dest_root / "ml-100k.zip"
    partial = archive.with_suffix(".zip.part")
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(partial, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {url} ({e}). If this machine is offline, pass --data_root DIR pointing at a "
            f"local ml-100k folder that holds u.data and u.item"
        ) from e
    partial.replace(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest_root)  # the archive's top-level folder is ml-100k/
    require_file(target / "u.data", "u.data inside the downloaded archive")
    return target


def _read_genres(root: Path) -> list[str]:
    path = root / "u.genre"
    if not path.is_file():
        logger.info("%s not found; using the standard ML-100K genre names", path)
        return list(DEFAULT_GENRES)
    names: dict[int, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if "|" in line:
            name, idx = line.rsplit("|", 1)
            names[int(idx)] = name
    return [names[i] for i in sorted(names)]


def _parse_rating_line(line: str) -> tuple | None:
    if not line.strip():
        return None
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != 4:
        raise MalformedRow(f"expected 4 tab-separated fields, got {len(parts)}")
    user, item, rating, ts = parts
    return (require_id(user, "user id"), require_id(item, "item id"),
            parse_int(ts, "timestamp"), parse_float(rating, "rating"))


def load_ml100k(cfg, assets_dir: Path) -> RawData:
    """Read u.data + u.item from ``cfg.data_root`` (or the downloaded archive)."""
    if cfg.data_root is None:
        from config import REPO_ROOT  # the download cache lives in the repo's data/raw (git-ignored)

        root = download_ml100k(REPO_ROOT / "data" / "raw")
    else:
        root = Path(cfg.data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"--data_root {root} not found: expected a folder holding u.data and u.item")
    data_path = require_file(root / "u.data", "MovieLens 100K ratings (user\\titem\\trating\\ttimestamp)")
    item_path = require_file(root / "u.item", "MovieLens 100K items (id|title|release date|...|genre flags)")

    records, n_bad_inter = read_records(numbered_lines(data_path), _parse_rating_line, str(data_path),
                                        "rating lines")
    inter = interactions_frame(records, ("user_id", "item_id", "timestamp", "rating"))

    genres = _read_genres(root)
    n_fields = 5 + len(genres)

    def parse_item(line: str) -> tuple | None:
        if not line.strip():
            return None
        parts = line.rstrip("\r\n").split("|")
        if len(parts) != n_fields:
            raise MalformedRow(f"expected {n_fields} '|'-separated fields, got {len(parts)}")
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise MalformedRow("genre flags must be 0/1")
        names = [g for g, f in zip(genres, flags) if f == "1"]
        text = f"Genres: {', '.join(names)}." if names else ""
        if parts[2].strip():
            text = f"{text} Released: {parts[2].strip()}".strip()
        return require_id(parts[0], "item id"), parts[1], text, ", ".join(names), parts[2].strip()

    item_records, n_bad_items = read_records(numbered_lines(item_path, encoding="latin-1"), parse_item,
                                             str(item_path), "item lines")
    items = pd.DataFrame.from_records(item_records, columns=["item_id", "title", "text", "genres", "release_date"])
    items, n_dup = items_frame(items, str(item_path))

    skipped = {"malformed_rows": {"interactions": n_bad_inter, "items": n_bad_items}}
    if n_dup:
        skipped["duplicate_item_rows"] = {"items": n_dup}
    return RawData(inter, items, skipped=skipped, notes=[f"read {data_path} and {item_path}"],
                   inputs=[data_path, item_path] + ([root / "u.genre"] if (root / "u.genre").is_file() else []))
