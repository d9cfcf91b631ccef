"""Shared pytest fixtures.

The real datasets and tiny models live in ``../shared`` beside the repository (never copied into it: their
licences forbid redistribution). Tests that need them fail loudly, not skip, when it is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def image_cache_outside_the_checkout(tmp_path_factory):
    """Tests that do not name an image cache would fill the checkout's data/image_cache (the default);
    point the default at a temp folder instead (subprocesses inherit the variable)."""
    import os

    from config import IMAGE_CACHE_ENV

    old = os.environ.get(IMAGE_CACHE_ENV)
    os.environ[IMAGE_CACHE_ENV] = str(tmp_path_factory.mktemp("image_cache"))
    yield
    if old is None:
        os.environ.pop(IMAGE_CACHE_ENV, None)
    else:
        os.environ[IMAGE_CACHE_ENV] = old


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared``: test data and tiny models kept outside the repository."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"{SHARED_DIR} is missing: these tests need the shared data/models folder checked out "
                    f"beside the repository (as ../shared relative to {REPO_ROOT})")
    return SHARED_DIR


def _shared_subdir(shared_dir: Path, rel: str) -> Path:
    path = shared_dir / rel
    if not path.is_dir():
        pytest.fail(f"{path} is missing from the shared folder")
    return path


@pytest.fixture(scope="session")
def ml100k_dir(shared_dir: Path) -> Path:
    return _shared_subdir(shared_dir, "data/ml-100k")


@pytest.fixture(scope="session")
def beauty_dir(shared_dir: Path) -> Path:
    return _shared_subdir(shared_dir, "data/amazon-beauty")
