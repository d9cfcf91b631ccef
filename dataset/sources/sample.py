"""A small synthetic dataset for demos and tests, generated deterministically from a seed.

Items are films in eight genres. Each title is built from genre-specific words ("Quantum Starship",
"Haunted Crypt"), each has a one-sentence description and a 64x64 PNG poster drawn with Pillow: a background
colour and a shape per genre, with size, position and accent colour varying per item. Users prefer one or two
genres; 85% of their 8-30 interactions come from those genres, and 30% of users pick up one more genre in
the second half of their sequence (drift). A reranker that reads titles can therefore beat random
ordering, while the task is not trivial.

Everything comes from ``numpy.random.default_rng(seed)`` (and Pillow draws from those numbers), so the same
seed and sizes give byte-identical tables and images. The posters are written into the folder being built and
then go through ``dataset.images`` like any other item image (64x64 RGB PNGs pass through unchanged).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dataset.raw import RawData, interactions_frame, items_frame

logger = logging.getLogger(__name__)

IMAGE_SIZE = 64
BASE_TIME = 1_600_000_000  # 2020-09-13, arbitrary but fixed

# genre: (background RGB, shape, adjectives, nouns, themes)
GENRES = {
    "Sci-Fi": ((20, 40, 110), "circle", ["Quantum", "Stellar", "Orbital", "Cyber", "Galactic", "Ion"],
               ["Starship", "Android", "Nebula", "Colony", "Signal", "Frontier"],
               ["a crew stranded beyond the galaxy", "an AI that wakes up", "first contact on a frozen moon"]),
    "Fantasy": ((70, 20, 100), "star", ["Enchanted", "Dragon's", "Elven", "Mystic", "Runed", "Emerald"],
                ["Crown", "Forest", "Sorcerer", "Quest", "Kingdom", "Amulet"],
                ["a young mage and a cursed kingdom", "a quest for a stolen crown", "dragons returning"]),
    "Mystery": ((40, 40, 40), "diamond", ["Silent", "Hidden", "Midnight", "Crimson", "Locked", "Vanishing"],
                ["Witness", "Detective", "Alibi", "Cipher", "Manor", "Clue"],
                ["a detective and a locked-room murder", "a vanished heiress", "a code left at a crime scene"]),
    "Romance": ((200, 60, 110), "ring", ["Summer", "Endless", "Sweet", "Parisian", "Secret", "Moonlit"],
                ["Kiss", "Promise", "Heart", "Wedding", "Letters", "Dance"],
                ["two strangers who meet every summer", "a wedding planner falling in love", "old letters"]),
    "Horror": ((90, 0, 0), "triangle", ["Haunted", "Cursed", "Bloody", "Whispering", "Rotten", "Shadow"],
               ["Crypt", "Asylum", "Doll", "Ritual", "Cabin", "Curse"],
               ["a haunted house that feeds on fear", "a ritual gone wrong", "a cabin in the dark woods"]),
    "Comedy": ((240, 190, 30), "square", ["Crazy", "Totally", "Awkward", "Big", "Silly", "Wacky"],
               ["Roommates", "Vacation", "Wedding Crash", "Road Trip", "Office Party", "Family Reunion"],
               ["a road trip where everything goes wrong", "chaotic roommates", "a family reunion disaster"]),
    "Documentary": ((30, 110, 60), "stripes", ["Wild", "Deep", "Hidden", "Ancient", "Frozen", "Living"],
                    ["Oceans", "Planet", "Empires", "Rainforest", "Migration", "Volcanoes"],
                    ["life in the deep ocean", "ancient empires and their ruins", "the great animal migrations"]),
    "Western": ((170, 100, 40), "cross", ["Dusty", "Lone", "Outlaw", "Golden", "Rattlesnake", "Iron"],
               ["Ranger", "Canyon", "Saloon", "Frontier Town", "Gunslinger", "Railroad"],
               ["a lone ranger defending a frontier town", "a gold rush feud", "outlaws robbing the railroad"]),
}
TONES = ["gripping", "light-hearted", "slow-burning", "fast-paced", "moving", "offbeat"]


def _make_items(rng: np.random.Generator, n_items: int) -> pd.DataFrame:
    names = list(GENRES)
    width = len(str(n_items))
    cats = np.arange(n_items) % len(names)
    rng.shuffle(cats)
    used: dict[str, int] = {}
    rows = []
    for k in range(n_items):
        genre = names[cats[k]]
        _, _, adjs, nouns, themes = GENRES[genre]
        base = f"{adjs[rng.integers(len(adjs))]} {nouns[rng.integers(len(nouns))]}"
        used[base] = used.get(base, 0) + 1
        title = base if used[base] == 1 else f"{base} {used[base]}"  # sequels keep titles unique
        text = f"A {TONES[rng.integers(len(TONES))]} {genre.lower()} film about {themes[rng.integers(len(themes))]}."
        item_id = f"i{k + 1:0{width}d}"
        rows.append((item_id, title, text, f"images/{item_id}.png", genre))
    return pd.DataFrame(rows, columns=["item_id", "title", "text", "image", "category"])


def _make_interactions(rng: np.random.Generator, items: pd.DataFrame, n_users: int) -> pd.DataFrame:
    names = list(GENRES)
    by_cat = {g: np.flatnonzero(items["category"].to_numpy() == g) for g in names}
    # Zipf-like popularity inside each genre, so a popularity retriever has signal too
    weights = {}
    for g, idx in by_cat.items():
        w = 1.0 / (rng.permutation(len(idx)) + 1.0) ** 0.8
        weights[g] = w / w.sum()
    item_ids = items["item_id"].to_numpy()
    width = len(str(n_users))
    records = []
    for u in range(n_users):
        uid = f"u{u + 1:0{width}d}"
        prefs = list(rng.choice(len(names), size=1 + int(rng.random() < 0.4), replace=False))
        length = int(rng.integers(8, min(30, len(item_ids)) + 1))  # no repeats, so at most every item once
        # drift: 30% of users pick up one more genre somewhere in the second half of their sequence
        drift_at = int(rng.integers(length // 2, length)) if rng.random() < 0.3 else -1
        seen: set[int] = set()
        t = BASE_TIME + int(rng.integers(0, 86400 * 365))
        for step in range(length):
            if step == drift_at:
                others = [c for c in range(len(names)) if c not in prefs]
                prefs.append(others[int(rng.integers(len(others)))])
            liked = rng.random() < 0.85
            cat = names[prefs[int(rng.integers(len(prefs)))] if liked else int(rng.integers(len(names)))]
            idx, w = by_cat[cat], weights[cat]
            fresh = np.array([i not in seen for i in idx])
            if not fresh.any():  # the user has seen the whole genre: take any unseen item
                idx = np.array([i for i in range(len(item_ids)) if i not in seen])
                w, fresh = np.full(len(idx), 1.0 / len(idx)), np.ones(len(idx), dtype=bool)
            p = np.where(fresh, w, 0.0)
            pick = int(idx[rng.choice(len(idx), p=p / p.sum())])
            seen.add(pick)
            t += int(rng.integers(3600, 86400 * 7))
            rating = float(rng.integers(4, 6) if liked else rng.integers(1, 5))
            records.append((uid, str(item_ids[pick]), t, rating))
    return interactions_frame(records, ("user_id", "item_id", "timestamp", "rating"))


def _draw_poster(path: Path, genre: str, item_seed: int) -> None:
    from PIL import Image, ImageDraw  # imported here: only the sample dataset draws images

    rng = np.random.default_rng(item_seed)
    bg, shape = GENRES[genre][0], GENRES[genre][1]
    accent = tuple(int(c) for c in rng.integers(150, 256, size=3))
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(14, 26))
    cx, cy = (int(v) for v in rng.integers(r + 2, IMAGE_SIZE - r - 2, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=accent)
    elif shape == "ring":
        d.ellipse(box, outline=accent, width=5)
    elif shape == "square":
        d.rectangle(box, fill=accent)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=accent)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=accent)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy - rad * np.sin(ang)))
        d.polygon(pts, fill=accent)
    elif shape == "stripes":
        for y in range(cy - r, cy + r, 8):
            d.rectangle((0, y, IMAGE_SIZE, y + 3), fill=accent)
    elif shape == "cross":
        w = max(3, r // 3)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=accent)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=accent)
    img.save(path, format="PNG", optimize=False)


def load_sample(cfg, assets_dir: Path) -> RawData:
    """Generate ``cfg.sample_users`` users over ``cfg.sample_items`` items from ``cfg.seed``."""
    if cfg.sample_items < len(GENRES):
        raise ValueError(f"sample_items must be >= {len(GENRES)} (one per genre), got {cfg.sample_items}")
    if cfg.sample_users < 1:
        raise ValueError(f"sample_users must be >= 1, got {cfg.sample_users}")
    rng = np.random.default_rng(cfg.seed)
    items = _make_items(rng, cfg.sample_items)
    inter = _make_interactions(rng, items, cfg.sample_users)
    items, _ = items_frame(items, "sample")
    item_seeds = dict(zip(items["item_id"], rng.integers(0, 2**31, size=len(items)).tolist()))

    def write_images(final_items: pd.DataFrame, out_dir: Path) -> None:
        img_dir = out_dir / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        for item_id, genre in zip(final_items["item_id"], final_items["category"]):
            _draw_poster(img_dir / f"{item_id}.png", genre, item_seeds[item_id])

    notes = [f"synthetic: {cfg.sample_users} users, {cfg.sample_items} items, {len(GENRES)} genres, "
             f"seed {cfg.seed}; images are 64x64 PNGs under images/"]
    return RawData(inter, items, notes=notes, write_assets=write_images)
