"""Integer encoding of a prepared dataset for the retrievers.

Item ids (strings) map to 1..N in lexicographic item_id order; 0 is padding. That order is also the
deterministic tie-break of every retriever ("lower item_id first"). Histories and targets follow the
leave-one-out contract of ``dataset.format.split_example``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from dataset.format import PreparedDataset, split_example, train_sequence

PAD = 0


class ItemVocab:
    """Bidirectional map between item ids and contiguous indices 1..N (0 = padding).

    Args:
        item_ids: every item id of the dataset; duplicates are ignored, order does not matter.
    """

    def __init__(self, item_ids: Iterable[str]):
        ids = sorted({str(i) for i in item_ids})
        if not ids:
            raise ValueError("ItemVocab needs at least one item id")
        # Index 0 holds a placeholder so that ``self.ids[index]`` decodes directly.
        self.ids = np.array([""] + ids, dtype=object)
        self.index = {item: i + 1 for i, item in enumerate(ids)}

    @property
    def n_items(self) -> int:
        """Number of real items N (excluding padding)."""
        return len(self.ids) - 1

    def encode(self, seq: Sequence[str], user_id: str = "?") -> np.ndarray:
        try:
            return np.fromiter((self.index[i] for i in seq), dtype=np.int64, count=len(seq))
        except KeyError as err:
            raise ValueError(f"user {user_id!r}: item {err.args[0]!r} is not in items.parquet") from None

    def decode(self, indices: np.ndarray) -> list[str]:
        return list(self.ids[np.asarray(indices, dtype=np.int64)])

    @classmethod
    def from_prepared(cls, prepared: PreparedDataset) -> "ItemVocab":
        return cls(prepared.items["item_id"].astype(str))


@dataclass
class EncodedSplit:
    """One split of all users, as integer arrays.

    Args:
        split: "val" or "test".
        user_ids: user ids in sequences.parquet order.
        histories: per user, the encoded history (chronological, full length, not truncated).
        targets: (U,) encoded held-out item per user.
    """

    split: str
    user_ids: list[str]
    histories: list[np.ndarray]
    targets: np.ndarray


def encode_split(prepared: PreparedDataset, vocab: ItemVocab, split: str) -> EncodedSplit:
    """Encode every user's (history, target) for ``split`` using the shared leave-one-out rule."""
    user_ids, histories, targets = [], [], []
    for uid, seq in zip(prepared.sequences["user_id"], prepared.sequences["items"]):
        ex = split_example(str(uid), [str(i) for i in seq], split)
        user_ids.append(ex.user_id)
        histories.append(vocab.encode(ex.history, ex.user_id))
        targets.append(vocab.encode([ex.target], ex.user_id)[0])
    return EncodedSplit(split, user_ids, histories, np.asarray(targets, dtype=np.int64))


def encode_train(prepared: PreparedDataset, vocab: ItemVocab) -> list[np.ndarray]:
    """Encoded TRAIN part (seq[:-2]) of every user; the val and test targets never appear here."""
    return [
        vocab.encode(train_sequence([str(i) for i in seq]), str(uid))
        for uid, seq in zip(prepared.sequences["user_id"], prepared.sequences["items"])
    ]


def left_pad(seqs: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Keep the last ``max_len`` items of each sequence, left-padded with 0 -> (U, max_len) int64.

    Left padding puts every user's most recent item at the last position, which is where the causal
    model reads the user representation.
    """
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[row, max_len - len(s):] = s
    return out
