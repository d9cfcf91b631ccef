"""Training-folder bookkeeping: atomic checkpoint folders, resume checks, the JSONL log.

Layout of a training output folder::

    last/    adapter_config.json, adapter_model.safetensors, adapter_meta.json (base fingerprint + step),
             trainer_state.pt (optimizer, scheduler, RNG states, step, best), train_config.json (resolved)
    best/    the adapter (+ adapter_meta.json) with the best validation NDCG@10 so far
    val/step-NNNNNN/   the validation run folders (rerank.pipeline's predictions/metrics)
    train_log.jsonl    one line per optimizer step ({"step", "loss", "lr", ...}) and per validation ({"val"})
    summary.json       written at the end

A folder is written under a temporary name and renamed into place; the previous version is renamed aside first
and deleted last, so an interruption leaves either the old or the new folder (``recover_dir`` puts the old one
back if the process died between the two renames).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from config import TrainConfig

log = logging.getLogger(__name__)

TRAIN_CONFIG_FILE = "train_config.json"
STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
RUN_FILES = ("last", "best", "val", LOG_FILE, "summary.json")


class TrainConfigMismatchError(ValueError):
    pass


def write_dir_atomically(dst: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temp folder beside ``dst`` and swap it in as ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dst.parent / f".{dst.name}.old"
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(dst: Path) -> None:
    """Undo a swap that died between its two renames; drop temp folders of interrupted writes."""
    old = dst.parent / f".{dst.name}.old"
    if not dst.exists() and old.exists():
        log.warning("restoring %s from an interrupted checkpoint write", dst)
        os.replace(old, dst)
    for tmp in dst.parent.glob(f".{dst.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def config_differences(saved: dict, cfg: TrainConfig) -> dict:
    """{field: (saved, now)} for the hyper-parameters that differ (see TrainConfig.RESUMABLE_CHANGES)."""
    now = json.loads(json.dumps(cfg.hyper_parameters()))  # same JSON types as the saved file
    saved_hp = {k: v for k, v in saved.items() if k not in TrainConfig.RESUMABLE_CHANGES}
    keys = sorted(set(now) | set(saved_hp))
    return {k: (saved_hp.get(k), now.get(k)) for k in keys if saved_hp.get(k) != now.get(k)}


def prepare_output(out: Path, cfg: TrainConfig) -> Optional[Path]:
    """The ``last/`` checkpoint to resume from, or None for a fresh start.

    Raises TrainConfigMismatchError when ``out`` holds a run with other hyper-parameters, unless ``cfg.force``:
    then the old run's files are removed and training starts over.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last", "best"):
        recover_dir(out / name)
    last = out / "last"
    if not (last / TRAIN_CONFIG_FILE).is_file() or not (last / STATE_FILE).is_file():
        if any((out / f).exists() for f in RUN_FILES):
            log.info("%s has no complete last/ checkpoint: starting over", out)
            clear_run(out)
        return None
    saved = json.loads((last / TRAIN_CONFIG_FILE).read_text())
    diff = config_differences(saved, cfg)
    if not diff:
        return last
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
    if not cfg.force:
        raise TrainConfigMismatchError(
            f"{out} holds a training run with other hyper-parameters ({listed}); resuming it with these would "
            f"mix two runs. Use the same settings to resume, another --output_dir, or --force to start over "
            f"(max_steps/epochs/eval_every/save_every may change on resume)"
        )
    log.warning("--force: starting over in %s (changed: %s)", out, listed)
    clear_run(out)
    return None


def clear_run(out: Path) -> None:
    for f in RUN_FILES:
        p = out / f
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def truncate_log(out: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def append_log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def read_log(out: Path) -> list[dict]:
    path = out / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
