"""The prepared-dataset folder: the typed boundary between data prep, retrieval and reranking.

Layout (all ids are the dataset's own ids, stored as strings)::

    <prepared>/items.parquet       item_id, title, text (may be ""), image (source as given: path/URL, or null),
                                   image_path (relative to <prepared>: verified RGB image, or null),
                                   + optional columns
    <prepared>/images/             the attached images (dataset.images), one per item with an image
    <prepared>/sequences.parquet   user_id, items (list<string>, chronological, after filtering)
    <prepared>/manifest.json       config, config_hash, stats {users, items, interactions}, skipped {...},
                                   versions, hashes {file: sha256}, created
    <prepared>/candidates/<retriever>/candidates_{val,test}.parquet
                                   user_id, candidates (list<string>, retriever order), scores (list<float>)
    <prepared>/candidates/<retriever>/retrieval.json   config, full-ranking metrics, coverage@K per split

Leave-one-out split of a sequence ``s`` (len >= 3): train = s[:-2], val target = s[-2] (history s[:-2]),
test target = s[-1] (history s[:-1]). Order within a user is chronological; ties in timestamp keep the
order of the source file (stable sort), so the split is deterministic.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd

ITEMS_FILE = "items.parquet"
SEQUENCES_FILE = "sequences.parquet"
MANIFEST_FILE = "manifest.json"
CANDIDATES_DIR = "candidates"
SPLITS = ("val", "test")


@dataclass(frozen=True)
class SplitExample:
    """One user's evaluation case: the history the model sees and the held-out target."""

    user_id: str
    history: list[str]
    target: str


def split_example(user_id: str, seq: list[str], split: str) -> SplitExample:
    """Leave-one-out: val predicts the second-to-last item, test the last."""
    if len(seq) < 3:
        raise ValueError(f"user {user_id!r} has {len(seq)} items; leave-one-out needs >= 3")
    if split == "val":
        return SplitExample(user_id, list(seq[:-2]), seq[-2])
    if split == "test":
        return SplitExample(user_id, list(seq[:-1]), seq[-1])
    raise ValueError(f"split must be 'val' or 'test', got {split!r}")


def train_sequence(seq: list[str]) -> list[str]:
    return list(seq[:-2])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PreparedDataset:
    """Read access to a prepared folder (written by ``dataset.prepare``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} not found: {self.root} is not a prepared dataset (run data_prepare.py first)"
            )
        self.manifest: dict = json.loads(manifest.read_text())
        self._items: Optional[pd.DataFrame] = None
        self._sequences: Optional[pd.DataFrame] = None

    @property
    def name(self) -> str:
        return self.manifest["config"]["dataset"]

    @property
    def content_hash(self) -> str:
        """Identifies the prepared content (items + sequences); other tables keyed to it must match."""
        h = self.manifest["hashes"]
        return hashlib.sha256((h[ITEMS_FILE] + h[SEQUENCES_FILE]).encode()).hexdigest()[:16]

    @property
    def items(self) -> pd.DataFrame:
        if self._items is None:
            self._items = pd.read_parquet(self.root / ITEMS_FILE).set_index("item_id", drop=False)
        return self._items

    @property
    def sequences(self) -> pd.DataFrame:
        if self._sequences is None:
            df = pd.read_parquet(self.root / SEQUENCES_FILE)
            df["items"] = df["items"].map(list)
            self._sequences = df.set_index("user_id", drop=False)
        return self._sequences

    def examples(self, split: str) -> Iterator[SplitExample]:
        for uid, seq in zip(self.sequences["user_id"], self.sequences["items"]):
            yield split_example(uid, seq, split)

    def image_file(self, item_id: str) -> Optional[Path]:
        """Absolute path of ``item_id``'s prepared image, or None when it has none (KeyError: unknown item)."""
        rel = self.items.at[item_id, "image_path"] if "image_path" in self.items.columns else None
        if rel is None or rel != rel:  # None or NaN
            return None
        return (self.root / rel).resolve()

    def candidates_path(self, retriever: str, split: str) -> Path:
        return self.root / CANDIDATES_DIR / retriever / f"candidates_{split}.parquet"
