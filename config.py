"""All configuration in one place: one dataclass per stage, CLI parsing, precedence, validation.

Precedence (lowest to highest): dataclass defaults < ``--config FILE`` (JSON or YAML) < explicit CLI flags.
Nothing here does work at import time; scripts call ``parse_prepare_args`` / ``parse_rerank_args`` in main().
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_PREPARED_ROOT = REPO_ROOT / "data" / "prepared"
DEFAULT_RUNS_ROOT = REPO_ROOT / "runs"
DEFAULT_CACHE_ROOT = REPO_ROOT / ".cache"
IMAGE_CACHE_ENV = "RERANK_IMAGE_CACHE"  # default image cache folder (one cache shared by several checkouts)


def default_image_cache_dir() -> Path:
    """``$RERANK_IMAGE_CACHE`` when set, else data/image_cache in the repository."""
    env = os.environ.get(IMAGE_CACHE_ENV)
    return Path(env) if env else REPO_ROOT / "data" / "image_cache"

KNOWN_DATASETS = ("ml-100k", "beauty", "games", "custom", "sample")
TEXT_MODES = ("text", "semantic_summary_small")  # scored by the text LLM (--model)
VL_MODES = ("raw_image", "caption", "semantic_summary")  # scored by Qwen3-VL (--vl_model)
RERANK_MODES = TEXT_MODES + VL_MODES + ("all",)  # all = every mode the prepared dataset supports
RETRIEVERS = ("sasrec", "popularity")


@dataclass
class DataConfig:
    """How a raw dataset becomes a prepared-dataset folder.

    Args:
        dataset: ml-100k | beauty | games | custom | sample, or any other Amazon 2014 category name.
        data_root: folder holding the raw files (ml-100k: u.data/u.item; amazon: ratings/reviews/meta files or
            user_sequence.txt + <Name>.item). None = download when online (ml-100k) / error.
        interactions / items: files for the custom dataset (CSV/TSV/Parquet).
        min_rating: keep interactions with rating >= this (0 keeps all; ignored when no ratings).
        min_uc / min_sc: iterative k-core on users / items until stable.
        output_dir: prepared folder; default data/prepared/<dataset>-<config hash>.
        image_map: CSV/TSV/Parquet file mapping item ids to images (a path relative to image_dir, or an
            http(s) URL); its rows take precedence over the dataset's own ``image`` column.
        image_dir: folder relative image paths are read from (default: the map file's folder).
        image_map_columns: "ITEM_COL,IMAGE_COL" of the map file.
        image_template: format string turning the map's image value into a path/URL: ``{}`` is the value,
            ``{column}`` any column of the row (e.g. "MovieImages/{}.jpg").
        image_max_side: long side in pixels after resizing (aspect ratio kept, never upscaled).
        image_format: auto (JPEG for JPEG/WebP sources, PNG otherwise) | jpeg | png.
        image_max_pixels: images with more pixels are rejected as too_large before decoding
            (default: Pillow's MAX_IMAGE_PIXELS).
        image_cache_dir: content-keyed cache of downloads and processed images (default $RERANK_IMAGE_CACHE,
            else data/image_cache).
        image_workers: threads for hashing/decoding (downloads use twice as many).
        image_download: fetch http(s) images (--no-image_download counts them as download_disabled).
        image_download_timeout / image_download_retries: per attempt; retries back off 0.5 s, 1 s, 2 s, ...
    """

    dataset: str = "sample"
    data_root: Optional[str] = None
    interactions: Optional[str] = None
    items: Optional[str] = None
    min_rating: float = 0.0
    min_uc: int = 5
    min_sc: int = 5
    output_dir: Optional[str] = None
    sample_users: int = 300
    sample_items: int = 200
    seed: int = 42
    image_map: Optional[str] = None
    image_dir: Optional[str] = None
    image_map_columns: str = "item_id,image"
    image_template: Optional[str] = None
    image_max_side: int = 448
    image_format: str = "auto"
    image_max_pixels: int = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS (not imported: config does no work)
    image_cache_dir: Optional[str] = None
    image_workers: int = 2
    image_download: bool = True
    image_download_timeout: float = 10.0
    image_download_retries: int = 3

    def __post_init__(self) -> None:
        if self.min_uc < 0 or self.min_sc < 0:
            raise ValueError(f"min_uc/min_sc must be >= 0, got {self.min_uc}/{self.min_sc}")
        if self.dataset == "custom" and (not self.interactions or not self.items):
            raise ValueError("--dataset custom needs --interactions FILE and --items FILE")
        if self.image_max_side < 1 or self.image_max_pixels < 1 or self.image_workers < 1:
            raise ValueError(f"image_max_side/image_max_pixels/image_workers must be >= 1, got "
                             f"{self.image_max_side}/{self.image_max_pixels}/{self.image_workers}")
        if self.image_format not in ("auto", "jpeg", "png"):
            raise ValueError(f"image_format must be auto, jpeg or png, got {self.image_format!r}")
        if self.image_download_timeout <= 0 or self.image_download_retries < 1:
            raise ValueError(f"image_download_timeout must be > 0 and image_download_retries >= 1, got "
                             f"{self.image_download_timeout}/{self.image_download_retries}")
        if self.image_template is not None and not self.image_map:
            raise ValueError("--image_template applies to --image_map rows; give --image_map FILE too")

    def content_keys(self) -> dict:
        """The settings that change the prepared content (output_dir, cache folder, threads do not)."""
        d = dataclasses.asdict(self)
        d.pop("output_dir")
        d.pop("image_cache_dir"), d.pop("image_workers")
        if self.dataset != "sample":
            d.pop("sample_users"), d.pop("sample_items")
        return d

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return DEFAULT_PREPARED_ROOT / f"{self.dataset}-{config_hash(self.content_keys())}"


@dataclass
class RetrievalConfig:
    """Stage-1 candidate generation.

    Args:
        retriever: sasrec | popularity | none (skip).
        top_k: candidates per user (the reranker accepts at most 26).
        threads: torch/faiss CPU threads for SASRec; 0 = min(2, cpu count). Use 1 on a busy machine:
            2 threads competing with other processes ran ~5x slower than 1 thread on a 2-core box.
    """

    retriever: str = "sasrec"
    top_k: int = 20
    max_len: int = 50
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    patience: int = 5
    eval_every: int = 2
    seed: int = 42
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS + ("none",):
            raise ValueError(f"unknown retriever {self.retriever!r}; available: {list(RETRIEVERS)} or 'none'")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class RerankConfig:
    """Stage-2 reranking with an LLM verbalizer (one forward pass per prompt).

    Args:
        data: prepared-dataset folder (or use --dataset to find the default one).
        candidates: external candidates file (Parquet/CSV: user_id, ordered item ids); default: the
            prepared folder's candidates of --retriever.
        mode: text | semantic_summary_small (text model) | raw_image | caption | semantic_summary (Qwen3-VL)
            | all (every mode the prepared dataset supports, one comparison table).
        model: text model: hub id, local folder, or alias (smollm2-135m).
        vl_model: Qwen3-VL model for the VL modes: hub id or local folder.
        max_history: last N history items in the prompt.
        max_images: images per raw_image prompt at most (history images dropped oldest-first first).
        max_prompt_tokens: token budget; met by shortening item texts, then dropping the oldest history.
        permutations: N seeded candidate orders, scores averaged per item (position-bias control).
        adapter: LoRA adapter folder made by train_rerank.py (its best/ or last/, or the training output folder,
            which means its best/), applied on top of --model; refused when it was trained on another base.
        backend: auto | unsloth | transformers. auto = Unsloth 4-bit for text models on CUDA when unsloth
            imports, else transformers; a backend named explicitly that cannot run here is an error.
        dtype: auto | float32 | bfloat16 | float16 (auto: bf16 on CUDA, fp32 on CPU).
        use_quantization: 4-bit NF4 (bitsandbytes, double quant); same as --quantization nf4.
        quantization: nf4 | int8 | none (bitsandbytes); overrides --use_quantization when given.
        use_flash_attention: FlashAttention-2 when flash_attn imports (CUDA), else SDPA with one notice.
        use_torch_compile: torch.compile the decoder (text model; Qwen3-VL's language model): slow first
            batches, faster after.
        torch_compile_mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs.
        llm_batch_size: prompts per forward (halved automatically on out-of-memory).
    """

    data: Optional[str] = None
    dataset: Optional[str] = None
    retriever: str = "sasrec"
    candidates: Optional[str] = None
    split: str = "test"
    mode: str = "text"
    model: str = "Qwen/Qwen3-0.6B"
    vl_model: str = "unsloth/Qwen3-VL-2B-Instruct"
    device: str = "auto"
    dtype: str = "auto"
    use_quantization: bool = False
    max_history: int = 10
    max_images: Optional[int] = None
    max_title_chars: int = 80
    max_text_chars: int = 200
    max_prompt_tokens: int = 2048
    llm_batch_size: int = 8
    permutations: int = 1
    seed: int = 42
    max_users: Optional[int] = None
    dump_prompts: Optional[str] = None
    output_dir: Optional[str] = None
    adapter: Optional[str] = None
    backend: str = "auto"
    quantization: Optional[str] = None
    use_flash_attention: bool = False
    use_torch_compile: bool = False
    torch_compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "unsloth", "transformers"):
            raise ValueError(f"unknown backend {self.backend!r}; available: ['auto', 'unsloth', 'transformers']")
        if self.quantization not in (None, "none", "nf4", "int8"):
            raise ValueError(f"unknown quantization {self.quantization!r}; available: nf4, int8, none")
        if self.torch_compile_mode not in ("default", "reduce-overhead", "max-autotune",
                                           "max-autotune-no-cudagraphs"):
            raise ValueError(f"unknown torch_compile_mode {self.torch_compile_mode!r}")
        if self.mode not in RERANK_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; available: {list(RERANK_MODES)}")
        if self.split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {self.split!r}")
        if self.permutations < 1:
            raise ValueError(f"permutations must be >= 1, got {self.permutations}")
        if self.llm_batch_size < 1:
            raise ValueError(f"llm_batch_size must be >= 1, got {self.llm_batch_size}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {self.max_users}")
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0, got {self.max_history}")
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be >= 0, got {self.max_images}")
        if self.adapter and self.mode in VL_MODES:
            raise ValueError(f"--adapter applies to the text model (text modes), not to mode {self.mode!r}")


@dataclass
class SummaryConfig:
    """Data-prep stage: Qwen3-VL semantic summaries and short captions of the items that have an image.

    The stage runs when ``semantic_summary`` is true. ``parse_prepare_args`` turns it on when ``--semantic_summary``
    is given, or when any other summary flag is given (``--use_quantization``, ``--summary_model``, ...), or
    when the config file has a "summary" section; ``--no-semantic_summary`` turns it off in every case.

    Args:
        semantic_summary: run the stage.
        summary_model: Qwen3-VL hub id or local folder.
        semantic_summary_batch_size: images per ``generate`` call (one left-padded batch).
        max_new_tokens: generation budget of a summary; caption_max_new_tokens: of a caption.
        summary_captions: also write captions (a second ``generate`` per batch; off halves the time).
        summary_use_title: put the item title in the prompts next to the image.
        use_quantization: True = 4-bit NF4 (double quant), False = full precision, None = 4-bit on CUDA and
            full precision on CPU (bitsandbytes' CPU 4-bit is slower than fp32; summaries do not need full
            precision, so GPUs default to 4-bit).
        summary_quant: nf4 | int8, when quantising.
        summary_device / summary_dtype: auto | cpu | cuda[:N]; auto | float32 | bfloat16 | float16.
        max_items: summarise at most the first N items with an image (quick runs; a later run adds the rest).
        summary_threads: torch CPU threads; 0 = torch's default. Use 1 on a busy machine (see RetrievalConfig).
        summary_cache: auto | dynamic | static KV cache in generate. static lets transformers compile the decode
            step on CUDA (CUDA graphs: a 2B model's decode is launch-bound, not bandwidth-bound); auto = static on
            CUDA without bitsandbytes weights (transformers does not compile those), dynamic otherwise.
        summary_pad_multiple: with a static cache, pad each batch's prompt length up to a multiple of N (fewer
            distinct shapes, so fewer compiles).
    """

    semantic_summary: bool = False
    summary_model: str = "unsloth/Qwen3-VL-2B-Instruct"
    semantic_summary_batch_size: int = 8
    max_new_tokens: int = 64
    caption_max_new_tokens: int = 24
    summary_captions: bool = True
    summary_use_title: bool = True
    use_quantization: Optional[bool] = None
    summary_quant: str = "nf4"
    summary_device: str = "auto"
    summary_dtype: str = "auto"
    max_items: Optional[int] = None
    summary_threads: int = 0
    summary_cache: str = "auto"
    summary_pad_multiple: int = 64

    def __post_init__(self) -> None:
        if self.summary_cache not in ("auto", "dynamic", "static"):
            raise ValueError(f"summary_cache must be auto, dynamic or static, got {self.summary_cache!r}")
        if self.summary_pad_multiple < 1:
            raise ValueError(f"summary_pad_multiple must be >= 1, got {self.summary_pad_multiple}")
        if self.semantic_summary_batch_size < 1:
            raise ValueError(f"semantic_summary_batch_size must be >= 1, got {self.semantic_summary_batch_size}")
        if self.max_new_tokens < 1 or self.caption_max_new_tokens < 1:
            raise ValueError(f"max_new_tokens/caption_max_new_tokens must be >= 1, got "
                             f"{self.max_new_tokens}/{self.caption_max_new_tokens}")
        if self.summary_quant not in ("nf4", "int8"):
            raise ValueError(f"summary_quant must be nf4 or int8, got {self.summary_quant!r}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}")
        if self.summary_threads < 0:
            raise ValueError(f"summary_threads must be >= 0, got {self.summary_threads}")
        if self.use_quantization is not None and not isinstance(self.use_quantization, bool):
            raise ValueError(f"use_quantization must be true, false or null, got {self.use_quantization!r}")


LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
TRAIN_NEGATIVES = ("random", "popular")


@dataclass
class TrainConfig:
    """Supervised fine-tuning of the verbalizer (LoRA / QLoRA) on train-split prompts (train_rerank.py).

    Precedence as everywhere: defaults < ``--config FILE`` ("train" section) < CLI flags. The resolved config is
    saved in every checkpoint; rerunning with the same output_dir resumes from ``last/``.

    Args:
        data: prepared-dataset folder (or use --dataset to find the default one).
        retriever: whose prepared val candidates score the validation runs (sasrec | popularity).
        mode: text | semantic_summary_small: what the prompts show of an item (as in run_rerank.py).
        model: base text model: hub id, local folder, or alias (smollm2-135m).
        output_dir: training folder: best/, last/, train_log.jsonl, val/ (default runs/train-<dataset>-<hash>).
        device / dtype: auto | cpu | cuda[:N]; auto | float32 | bfloat16 | float16 (as in run_rerank.py).
        use_quantization: QLoRA: the base in 4-bit NF4 (bitsandbytes, double quant), LoRA on top in the
            compute dtype; otherwise LoRA on a full-precision base.
        use_unsloth: auto (Unsloth's get_peft_model when unsloth is importable and the device is CUDA) | no.
        max_history: last N items before the training position shown as history.
        max_title_chars / max_text_chars / max_prompt_tokens: the prompt limits, as in run_rerank.py (use the
            same values when evaluating the adapter).
        train_positions_per_user: training positions per user: the last N positions of the user's train part
            (the sequence without its val and test items); each position's item is the target.
        max_train_users: use a seeded sample of N users for training (None: all).
        train_negatives: random (uniform) | popular (by train-part popularity): negatives drawn from the items
            outside the user's whole sequence, so no val/test item is ever a candidate.
        n_candidates: candidates per training prompt, the target included (<= 26, labels A-Z).
        lora_r / lora_alpha / lora_dropout: LoRA rank, scaling numerator, dropout on the adapter input.
        lora_target_modules: comma-separated module names the adapters wrap.
        lr: AdamW peak learning rate (linear warmup over warmup_steps, then constant, so extending max_steps
            on resume continues the same schedule).
        weight_decay: AdamW weight decay of the adapter weights.
        warmup_steps: optimizer steps of linear warmup.
        train_batch_size: prompts per forward/backward.
        grad_accum: forward/backward passes per optimizer step (effective batch = train_batch_size x grad_accum).
        epochs: passes over the training examples, when max_steps is not given.
        max_steps: optimizer steps in total (overrides epochs; the data cycles with a new shuffle per epoch).
        eval_every: validation NDCG@10 every N optimizer steps and at the end (0: no validation; best/ is then
            the last step).
        val_users: seeded sample of val users scored by each validation run (None: all).
        eval_batch_size: prompts per forward in validation.
        save_every: write last/ every N optimizer steps (and always at the end; 0: at validations and the end).
        gradient_checkpointing: recompute activations in backward (less memory, ~30% slower).
        seed: data sampling, shuffles, LoRA init and dropout.
        force: the output_dir holds a run with other hyper-parameters: start over (its last/, best/ and log are
            replaced) instead of refusing.
    """

    data: Optional[str] = None
    dataset: Optional[str] = None
    retriever: str = "sasrec"
    mode: str = "text"
    model: str = "Qwen/Qwen3-0.6B"
    output_dir: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    use_quantization: bool = False
    use_unsloth: str = "auto"
    max_history: int = 10
    max_title_chars: int = 80
    max_text_chars: int = 200
    max_prompt_tokens: int = 2048
    train_positions_per_user: int = 1
    max_train_users: Optional[int] = None
    train_negatives: str = "random"
    n_candidates: int = 20
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = LORA_TARGETS
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    train_batch_size: int = 4
    grad_accum: int = 1
    epochs: int = 1
    max_steps: Optional[int] = None
    eval_every: int = 50
    val_users: Optional[int] = 100
    eval_batch_size: int = 8
    save_every: int = 0
    gradient_checkpointing: bool = False
    seed: int = 42
    force: bool = False

    # changing these between runs of one output_dir is not a different training run
    RESUMABLE_CHANGES = ("max_steps", "epochs", "eval_every", "save_every", "eval_batch_size", "force",
                         "output_dir", "device", "use_unsloth")

    def __post_init__(self) -> None:
        if self.mode not in TEXT_MODES:
            raise ValueError(f"training supports the text modes {list(TEXT_MODES)}, got {self.mode!r}")
        if self.train_negatives not in TRAIN_NEGATIVES:
            raise ValueError(f"train_negatives must be one of {list(TRAIN_NEGATIVES)}, got {self.train_negatives!r}")
        if not 2 <= self.n_candidates <= 26:
            raise ValueError(f"n_candidates must be in 2..26 (labels A-Z), got {self.n_candidates}")
        if self.use_unsloth not in ("auto", "no"):
            raise ValueError(f"use_unsloth must be auto or no, got {self.use_unsloth!r}")
        for name in ("train_positions_per_user", "lora_r", "lora_alpha", "train_batch_size", "grad_accum",
                     "epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_train_users", "val_users"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {v}")
        if self.eval_every < 0 or self.save_every < 0 or self.warmup_steps < 0 or self.max_history < 0:
            raise ValueError("eval_every, save_every, warmup_steps and max_history must be >= 0")
        if not 0.0 <= self.lora_dropout < 1.0 or self.lr <= 0:
            raise ValueError(f"need 0 <= lora_dropout < 1 and lr > 0, got {self.lora_dropout} / {self.lr}")
        if not self.target_modules():
            raise ValueError("lora_target_modules is empty")

    def target_modules(self) -> list[str]:
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def hyper_parameters(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        d = dataclasses.asdict(self)
        for k in self.RESUMABLE_CHANGES:
            d.pop(k)
        return d

    def resolved_output_dir(self, dataset_name: str) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return DEFAULT_RUNS_ROOT / f"train-{dataset_name}-{config_hash(self.hyper_parameters())}"


def config_hash(d: dict, n: int = 10) -> str:
    """Stable short hash of a JSON-able dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ---------------------------------------------------------------- CLI plumbing

_HELP = {
    "dataset": "dataset name: ml-100k, beauty, games, custom, sample, or another Amazon 2014 category",
    "data_root": "folder with the raw files (tests use ../shared/data/ml-100k)",
    "output_dir": "output folder (default: derived from the config)",
    "model": "hub id, local folder, or alias 'smollm2-135m' (offline SmolLM2-135M-Instruct)",
    "use_quantization": "load the model in 4-bit NF4 (bitsandbytes, double quant)",
    "semantic_summary": "run the Qwen3-VL summary/caption stage on items with an image",
    "summary_model": "Qwen3-VL for summaries: hub id or local folder",
    "semantic_summary_batch_size": "images per generate call",
    "max_new_tokens": "tokens generated per summary at most",
    "caption_max_new_tokens": "tokens generated per caption at most",
    "summary_captions": "also write short captions (a second generate per batch)",
    "summary_use_title": "show the item title next to the image in the summary prompts",
    "summary_quant": "nf4 or int8, when the summary model is quantised",
    "summary_device": "device for the summary model: auto, cpu, cuda[:N]",
    "summary_dtype": "summary model dtype: auto, float32, bfloat16, float16",
    "max_items": "summarise at most the first N items with an image",
    "summary_threads": "torch CPU threads for summaries (0 = torch default)",
}


def _doc_help(cls) -> dict[str, str]:
    """Field help from the class's ``Args:`` docstring (``name: text`` or ``a / b: text``, indented
    continuation lines), so each option is documented once, next to its field."""
    import re

    doc = (cls.__doc__ or "").split("Args:", 1)
    if len(doc) < 2:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in doc[1].splitlines():
        m = re.match(r"^\s{8}([a-z_][\w/ ]*?):\s+(.*)$", line)
        if m:
            names = [n.strip() for n in m.group(1).split("/")]
            for n in names:
                out[n] = m.group(2).strip()
        elif names and line.strip():
            for n in names:
                out[n] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in out.items()}  # argparse formats help with %


def _add_dataclass_args(p: argparse.ArgumentParser, cls, skip: Sequence[str] = ()) -> None:
    """One flag per dataclass field; defaults are SUPPRESSed so we can tell which flags the user gave."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = f"--{f.name}"
        helptext = _HELP.get(f.name) or _doc_help(cls).get(f.name) or f.name.replace("_", " ")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{helptext} (default {default})")
            continue
        typ = {"int": int, "float": float}.get(str(f.type).replace("Optional[", "").rstrip("]"), str)
        p.add_argument(flag, type=typ, default=argparse.SUPPRESS, help=f"{helptext} (default {default})")


def _load_config_file(path: Optional[str]) -> dict:
    if not path:
        return {}
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _build(cls, file_values: dict, cli_values: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(file_values) - names
    if unknown:
        raise ValueError(f"unknown keys in config file for {cls.__name__}: {sorted(unknown)}")
    merged = {**file_values, **{k: v for k, v in cli_values.items() if k in names}}
    return cls(**merged)


def parse_prepare_args(
    argv: Optional[Sequence[str]] = None,
) -> tuple[DataConfig, RetrievalConfig, SummaryConfig]:
    p = argparse.ArgumentParser(description="Prepare a dataset, its stage-1 candidates and item summaries.")
    p.add_argument("--config", help="JSON/YAML file with 'data', 'retrieval' and 'summary' sections")
    _add_dataclass_args(p, DataConfig)
    _add_dataclass_args(p, RetrievalConfig, skip=("seed", "device"))
    p.add_argument("--retrieval_device", dest="device", default=argparse.SUPPRESS, help="device for SASRec")
    _add_dataclass_args(p, SummaryConfig, skip=("use_quantization",))
    # tri-state (None = 4-bit on CUDA only), so not the generic bool flag
    p.add_argument("--use_quantization", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="summaries: 4-bit NF4 via bitsandbytes (--no-use_quantization / --no_quantization: "
                        "full precision; default: 4-bit on CUDA, full precision on CPU); implies the stage")
    p.add_argument("--no_quantization", dest="use_quantization", action="store_false",
                   default=argparse.SUPPRESS, help="summaries in full precision (same as --no-use_quantization)")
    ns = vars(p.parse_args(argv))
    file_cfg = _load_config_file(ns.pop("config", None))
    data = _build(DataConfig, file_cfg.get("data", {}), ns)
    retr_cli = {k: v for k, v in ns.items() if k in {f.name for f in fields(RetrievalConfig)}}
    retr = _build(RetrievalConfig, file_cfg.get("retrieval", {}), retr_cli)
    summary_names = {f.name for f in fields(SummaryConfig)}
    summary_cli = {k: v for k, v in ns.items() if k in summary_names}
    summary_file = dict(file_cfg.get("summary", {}) or {})
    # any summary option (or a "summary" section) means the user wants the stage, unless they said otherwise
    if "semantic_summary" not in summary_cli and "semantic_summary" not in summary_file and (
            summary_cli or "summary" in file_cfg):
        summary_cli["semantic_summary"] = True
    summ = _build(SummaryConfig, summary_file, summary_cli)
    return data, retr, summ


def _parse_one(cls, section: str, description: str, argv: Optional[Sequence[str]]):
    """A CLI made of one config dataclass, with an optional config file section."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help=f"JSON/YAML file with a '{section}' section")
    _add_dataclass_args(p, cls)
    ns = vars(p.parse_args(argv))
    file_cfg = _load_config_file(ns.pop("config", None))
    return _build(cls, file_cfg.get(section, {}), ns)


def parse_rerank_args(argv: Optional[Sequence[str]] = None) -> RerankConfig:
    return _parse_one(RerankConfig, "rerank", "Rerank stage-1 candidates with an LLM verbalizer and evaluate.", argv)


def parse_train_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    return _parse_one(TrainConfig, "train", "Fine-tune the verbalizer with LoRA / QLoRA on train-split prompts.", argv)
