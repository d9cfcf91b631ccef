"""LoRA adapters on a loaded base model: save with a fingerprint of the base, load only onto that base.

peft's ``adapter_config.json`` records ``base_model_name_or_path``, but a name is a weak check: the same model
sits in different folders (our alias cache, a temp dir, a hub id), and two models in the same folder may differ.
So every adapter we save also carries ``adapter_meta.json``::

    {"base_model": <--model as given>, "base_source": <resolved folder or hub id>,
     "base_config_hash": sha256 of the architecture config (dtype / quantisation / cache keys removed),
     "base_embed_probe": sums of 64 strided rows of the input embeddings (a cheap weights fingerprint that
                         survives fp32 / bf16 / NF4 loading: embeddings are never 4-bit quantised)}

``apply_adapter`` refuses an adapter whose fingerprint does not match the loaded base, naming both. Foreign
adapters (no ``adapter_meta.json``) are checked by peft's recorded base name, and a shape mismatch inside peft is
turned into the same clear error.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)

ADAPTER_META = "adapter_meta.json"
ADAPTER_CONFIG = "adapter_config.json"
# config keys that change with how a model is loaded, not what it is
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "quantization_config",
                        "use_cache", "architectures", "_attn_implementation", "_attn_implementation_autoset",
                        "pretraining_tp", "_commit_hash")
PROBE_ROWS = 64
PROBE_RTOL = 2e-2  # bf16 rounding moves a row sum by ~1e-3 relative; different weights by O(1)


class AdapterMismatchError(ValueError):
    pass


def _base(model):
    """The transformers model under any peft wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def base_fingerprint(model, base_model: Optional[str] = None, base_source: Optional[str] = None) -> dict:
    """What identifies the base a LoRA adapter belongs to (see the module docstring)."""
    base = _base(model)
    cfg = base.config.to_dict()
    for k in VOLATILE_CONFIG_KEYS:
        cfg.pop(k, None)
    cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    emb = base.get_input_embeddings().weight  # (V, H)
    step = max(1, emb.shape[0] // PROBE_ROWS)
    with torch.no_grad():
        probe = emb[::step][:PROBE_ROWS].float().sum(dim=1).cpu()  # (PROBE_ROWS,)
    return {
        "base_model": base_model,
        "base_source": base_source or getattr(base.config, "_name_or_path", None),
        "base_model_type": cfg.get("model_type"),
        "base_config_hash": cfg_hash,
        "base_embed_probe": [round(float(x), 6) for x in probe],
    }


def write_adapter_meta(adapter_dir: str | Path, fingerprint: dict, extra: Optional[dict] = None) -> None:
    (Path(adapter_dir) / ADAPTER_META).write_text(json.dumps({**fingerprint, **(extra or {})}, indent=2))


def resolve_adapter_dir(adapter: str | Path) -> Path:
    """An adapter folder; a training output folder means its ``best/`` adapter."""
    path = Path(adapter).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        return path
    if (path / "best" / ADAPTER_CONFIG).is_file():
        log.info("--adapter %s is a training folder: using its best/ adapter", path)
        return path / "best"
    raise FileNotFoundError(
        f"--adapter {adapter}: no {ADAPTER_CONFIG} there (nor in its best/); pass a folder written by "
        f"train_rerank.py (<out>/best or <out>/last) or by peft's save_pretrained"
    )


def _probe_matches(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    x, y = torch.tensor(a), torch.tensor(b)
    scale = max(float(x.abs().mean()), 1e-6)
    return bool(torch.allclose(x, y, rtol=PROBE_RTOL, atol=PROBE_RTOL * scale))


def check_adapter_base(model, adapter_dir: Path, base_name: Optional[str] = None) -> None:
    """Raise AdapterMismatchError when ``adapter_dir`` was trained on another base than ``model``."""
    here = base_fingerprint(model, base_name)
    loaded = f"{base_name or here['base_source']!r} ({here['base_source']})"
    meta_path = adapter_dir / ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        trained = f"{meta.get('base_model')!r} ({meta.get('base_source')})"
        if meta.get("base_config_hash") != here["base_config_hash"]:
            raise AdapterMismatchError(
                f"adapter {adapter_dir} was trained on base {trained}, a {meta.get('base_model_type')} with config "
                f"hash {meta.get('base_config_hash')}, but the loaded base is {loaded}, a {here['base_model_type']} "
                f"with config hash {here['base_config_hash']}: load the adapter with --model {meta.get('base_model')}"
            )
        if not _probe_matches(meta.get("base_embed_probe", []), here["base_embed_probe"]):
            raise AdapterMismatchError(
                f"adapter {adapter_dir} was trained on base {trained}; the loaded base {loaded} has the same "
                f"architecture but different weights (embedding fingerprint differs): load the adapter with "
                f"--model {meta.get('base_model')}"
            )
        return
    recorded = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    names = {base_name, here["base_source"]} - {None}
    if recorded and names and recorded not in names and Path(recorded).name not in {Path(n).name for n in names}:
        raise AdapterMismatchError(
            f"adapter {adapter_dir} records base model {recorded!r} (adapter_config.json, no {ADAPTER_META}), "
            f"but the loaded base is {loaded}: pass --model {recorded}"
        )


def apply_adapter(model, adapter: str | Path, base_name: Optional[str] = None, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` on a loaded base after checking the adapter belongs to it.

    Args:
        model: the loaded transformers base (dense or NF4).
        adapter: adapter folder, or a training folder (its best/ is used).
        base_name: the --model value the base was loaded from (named in errors).
        is_trainable: keep the LoRA weights trainable (resuming training) instead of eval mode.
    """
    from peft import PeftModel

    adapter_dir = resolve_adapter_dir(adapter)
    check_adapter_base(model, adapter_dir, base_name)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise
        raise AdapterMismatchError(
            f"adapter {adapter_dir} does not fit the loaded base {base_name or _base(model).config._name_or_path!r}: "
            f"{str(e).splitlines()[0]}"
        ) from e
    log.info("applied LoRA adapter %s", adapter_dir)
    return peft_model if is_trainable else peft_model.eval()
