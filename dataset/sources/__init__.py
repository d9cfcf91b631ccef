"""Source loaders behind one signature: ``loader(cfg: DataConfig, assets_dir: Path) -> RawData``.

``assets_dir`` is the (temporary) prepared folder being built; loaders that produce files (the sample
dataset's images) write them there through ``RawData.write_assets``. Registration is explicit; any name that
is not registered is treated as an Amazon 2014 category when it is one of the official categories or when
``--data_root`` holds files for it, and is an error otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dataset.raw import RawData
from dataset.sources import amazon
from dataset.sources.custom import load_custom
from dataset.sources.movielens import load_ml100k
from dataset.sources.sample import load_sample

Loader = Callable[..., RawData]

_LOADERS: dict[str, Loader] = {}


def register_source(name: str, loader: Loader) -> None:
    """Add a loader under ``name``; registering a name twice is an error (it would hide the first)."""
    if name in _LOADERS:
        raise ValueError(f"source {name!r} is already registered")
    _LOADERS[name] = loader


register_source("ml-100k", load_ml100k)
register_source("custom", load_custom)
register_source("sample", load_sample)
register_source("beauty", amazon.load_amazon)
register_source("games", amazon.load_amazon)


def available_sources() -> list[str]:
    return sorted(_LOADERS)


def get_loader(name: str, data_root: str | None = None) -> Loader:
    """The loader for ``name``; unknown names fall back to Amazon when they can be one (see module doc)."""
    if name in _LOADERS:
        return _LOADERS[name]
    cat = amazon.category_file_name(name)
    has_files = data_root is not None and any(amazon.find_files(Path(data_root), cat))
    if amazon.is_known_category(name) or has_files:
        return amazon.load_amazon
    raise ValueError(
        f"unknown dataset {name!r}; available: {available_sources()} or an Amazon 2014 category "
        f"({', '.join(amazon.CATEGORIES_2014)}) with its files in --data_root "
        f"(looked for {amazon.interaction_candidates(cat) + amazon.item_candidates(cat)} "
        f"in {data_root if data_root else '(no --data_root given)'})"
    )


def load_raw(cfg, assets_dir: Path) -> RawData:
    return get_loader(cfg.dataset, cfg.data_root)(cfg, assets_dir)
