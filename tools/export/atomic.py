"""All-or-nothing output folders: write into a temp folder beside the target, rename it into place at the end.

A crash, Ctrl-C or a full disk mid-write leaves no half-written artifact: the temp folder is removed and the
target is either absent or the previous complete version.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing target unless ``overwrite`` (called for every output before any work starts)."""
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it (or choose another --out)")


@contextmanager
def atomic_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder that becomes ``target`` when the block finishes without an exception.

    Args:
        target: the final folder.
        overwrite: replace an existing ``target`` (it is kept until the new one is complete).
    """
    target = Path(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    # same parent = same filesystem, so the final os.replace is an atomic rename
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("removed the unfinished %s", tmp)
        raise


def leftover_temp_folders(parent: Path) -> list[Path]:
    """Temp folders of atomic_folder under ``parent`` (tests assert there are none after a failure)."""
    return [p for p in Path(parent).iterdir() if TMP_MARK in p.name] if Path(parent).is_dir() else []
