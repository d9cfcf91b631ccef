"""Download image URLs into a cache folder: thread pool, timeout, retries with backoff, resumable.

Each URL is stored as ``<downloads>/<sha256(url)[:32]>`` (written to a ``.part`` file and renamed, so an
interrupted run never leaves a half file that a later run would take for a complete one). A URL whose file is
already there is not fetched again: rerunning after a crash or on a flaky network only fetches what is
missing. Failed URLs are not remembered: the next run tries them again.

Retried: timeouts, connection errors, HTTP 429 and 5xx. Not retried: other HTTP errors (404 stays 404) and a
host name that does not resolve (the usual sign of an offline machine; retrying would only add waiting).
The bytes are checked by the caller (``dataset.image_processing``), not here.

Giving up: when the first ``give_up_after`` URLs all fail and none succeeded (an offline machine, a blocked
host), the remaining URLs are not tried and fail with a note saying so; otherwise 12k Amazon URLs times
retries and backoff would keep a run waiting for an hour to learn nothing.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

logger = logging.getLogger(__name__)

USER_AGENT = "seqrerank-image-fetch/1.0"
# Refuse bodies above this many bytes: an image URL answering with a huge file is a mistake, not a poster.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class DownloadSettings:
    """How URLs are fetched.

    Args:
        timeout: seconds per connection attempt and per read.
        retries: attempts per URL (>= 1).
        backoff: seconds before the second attempt; doubled before each further one.
        workers: parallel downloads (threads: the work is waiting on the network).
        give_up_after: stop trying when this many URLs failed before any succeeded (0 = never give up).
    """

    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5
    workers: int = 8
    give_up_after: int = 20

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 1 or self.backoff < 0 or self.workers < 1 or self.give_up_after < 0:
            raise ValueError(f"invalid download settings: {self}")


@dataclass
class DownloadResult:
    """Where a URL's bytes are (``path``), or why not (``error``); ``fetched`` is False for a reused file."""

    url: str
    path: Optional[Path] = None
    error: Optional[str] = None
    fetched: bool = False
    attempts: int = 0


class _Permanent(Exception):
    """A failure that retrying will not fix."""


def url_cache_path(downloads_dir: Path, url: str) -> Path:
    return downloads_dir / hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def _fetch_once(url: str, dest: Path, timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    part = dest.with_name(f"{dest.name}.{os.getpid()}-{os.urandom(4).hex()}.part")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            total = 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise _Permanent(f"body larger than {MAX_DOWNLOAD_BYTES} bytes")
                out.write(chunk)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _is_permanent(err: BaseException) -> bool:
    if isinstance(err, _Permanent):
        return True
    if isinstance(err, urllib.error.HTTPError):
        return not (err.code == 429 or err.code >= 500)
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, socket.gaierror):
        return True
    if isinstance(err, ValueError):  # malformed URL
        return True
    return False


def download_one(url: str, downloads_dir: Path, settings: DownloadSettings) -> DownloadResult:
    """Fetch ``url`` into the cache (or reuse the cached file); never raises for network problems."""
    dest = url_cache_path(downloads_dir, url)
    if dest.is_file():
        return DownloadResult(url, path=dest)
    res = DownloadResult(url)
    for attempt in range(1, settings.retries + 1):
        res.attempts = attempt
        try:
            _fetch_once(url, dest, settings.timeout)
            res.path, res.fetched, res.error = dest, True, None
            return res
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, _Permanent) as e:
            # URLError/HTTPError are OSError subclasses; socket.timeout (TimeoutError) is one too
            res.error = f"{type(e).__name__}: {e}"
            if _is_permanent(e):
                break
        if attempt < settings.retries:
            time.sleep(settings.backoff * (2 ** (attempt - 1)))
    return res


class _Breaker:
    """Counts fetch outcomes across threads; open (stop trying) after N failures without a success."""

    def __init__(self, give_up_after: int):
        self.limit, self.failures, self.successes = give_up_after, 0, 0
        self.lock = threading.Lock()

    def is_open(self) -> bool:
        with self.lock:
            return self.limit > 0 and self.successes == 0 and self.failures >= self.limit

    def record(self, res: DownloadResult) -> None:
        if res.path is not None and not res.fetched:
            return  # a reused file says nothing about the network
        with self.lock:
            if res.error:
                self.failures += 1
            else:
                self.successes += 1


def _guarded(url: str, downloads_dir: Path, settings: DownloadSettings, breaker: _Breaker) -> DownloadResult:
    if breaker.is_open() and not url_cache_path(downloads_dir, url).is_file():
        return DownloadResult(url, error=f"not tried: the first {breaker.limit} downloads all failed (offline?)")
    res = download_one(url, downloads_dir, settings)
    breaker.record(res)
    return res


def download_all(urls: list[str], downloads_dir: Path, settings: DownloadSettings) -> dict[str, DownloadResult]:
    """Fetch every distinct URL in ``urls`` with a thread pool; returns one result per URL."""
    distinct = list(dict.fromkeys(urls))
    if not distinct:
        return {}
    downloads_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, DownloadResult] = {}
    breaker = _Breaker(settings.give_up_after)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        futures = [pool.submit(_guarded, u, downloads_dir, settings, breaker) for u in distinct]
        for fut in tqdm(futures, desc="download images", unit="img", disable=len(distinct) < 20):
            r = fut.result()
            results[r.url] = r
    failed = [r for r in results.values() if r.error]
    if breaker.is_open():
        logger.warning("gave up on image downloads: the first %d URLs all failed; %d URLs were not tried "
                       "(rerun when online: finished downloads are kept)", breaker.limit,
                       sum(r.error.startswith("not tried") for r in failed))
    if failed:
        logger.warning("%d of %d image URLs failed to download, e.g. %s", len(failed), len(distinct),
                       "; ".join(f"{r.url} ({r.error})" for r in failed[:5]))
    return results
