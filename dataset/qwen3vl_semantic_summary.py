"""Qwen3-VL semantic summaries and short captions of item images, batched and resumable.

For every item with an image (``items.image_path``, relative to the prepared folder) the model writes

- a **summary**: what the item is, what it is for or about, when it is used or enjoyed and who would want it,
  in 2-3 sentences, without describing the picture itself (colours, layout);
- a **caption**: one short sentence naming what the image shows.

Two prompts, one per kind, rather than one prompt asking for both: a 2B model's "Summary: ... Caption: ..."
output would need parsing that fails on some items, and the caption can then get its own, shorter budget.
Each kind is ONE ``generate`` call per left-padded batch of ``semantic_summary_batch_size`` images, greedy.

Resumability: after every batch the rows (item_id, summary, caption) are written to
``<prepared>/summaries.parts/part-NNNNNN.parquet`` through a temporary file and ``os.replace``, so a part is
either complete or absent. A new run reads the parts whose Parquet metadata carries this dataset's hash and
the same generation settings, skips their items and numbers its parts after them: a kill at any moment loses
only the batch in flight and duplicates nothing. Parts with other settings (another model, prompt, budget)
are removed with a warning; the generation is restarted. At the end all parts are merged into
``<prepared>/summaries.parquet`` (``rerank.item_text.write_summaries``: stamped with the dataset hash) and
``manifest.json`` gets a ``summaries`` record (model, prompts, settings, counts, time, items/s) by atomic
replace; the items/sequences hashes and so the dataset's content hash are left as they are.

Items whose image is missing or cannot be decoded are counted per reason and left out of the table (the
reranker shows them title-only); items without an image are counted as ``skipped_no_image``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import queue
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from config import SummaryConfig, config_hash
from dataset.format import MANIFEST_FILE, PreparedDataset

log = logging.getLogger(__name__)

PARTS_DIR = "summaries.parts"
PART_GLOB = "part-*.parquet"
SETTINGS_KEY = b"summary_settings_hash"
HASH_KEY = b"dataset_hash"  # same key rerank.item_text uses for the final table

SUMMARY_PROMPT = (
    "{title}Describe this item for a recommender system in 2-3 concise sentences: what it is, what it is "
    "for or about, when or how it is used or enjoyed, and who would want it. Do not describe the picture "
    "itself (no colours, layout or text in the image)."
)
CAPTION_PROMPT = "{title}Write one short caption (at most 12 words) naming what this image shows."
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)

SUMMARY_CACHES = ("dynamic", "static")
PART_SCHEMA = pa.schema([("item_id", pa.string()), ("summary", pa.string()), ("caption", pa.string())])


def prompt_text(template: str, title: Optional[str], use_title: bool) -> str:
    title_line = f"Title: {title}\n" if use_title and title else ""
    return template.format(title=title_line)


def clean_output(text: str) -> str:
    """Generated text without thinking blocks or surrounding whitespace (special tokens are already gone)."""
    return _THINK.sub("", text).strip()


def settings_of(cfg: SummaryConfig, quantization: Optional[str], dtype: str) -> dict:
    """What decides the generated text; parts made with other settings are not reused."""
    return {
        "model": cfg.summary_model,
        "prompts": {"summary": SUMMARY_PROMPT, "caption": CAPTION_PROMPT if cfg.summary_captions else None},
        "use_title": cfg.summary_use_title,
        "max_new_tokens": cfg.max_new_tokens,
        "caption_max_new_tokens": cfg.caption_max_new_tokens if cfg.summary_captions else None,
        "quantization": quantization,
        "dtype": dtype,
        "greedy": True,
    }


# ------------------------------------------------------------------ images


def open_image(path: Path):
    """(RGB image, None) or (None, reason) with reason 'missing' | 'corrupt'."""
    from PIL import Image

    if not path.is_file():
        return None, "missing"
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not inside the processor
            return im.convert("RGB"), None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL raises OSError (truncated/unidentified), SyntaxError (broken headers), ValueError (bad modes)
        log.warning("cannot decode image %s: %s", path, e)
        return None, "corrupt"


# ------------------------------------------------------------------ parts (the resumable append log)


def _write_part(parts: Path, number: int, rows: pd.DataFrame, dataset_hash: str, settings_hash: str) -> Path:
    table = pa.Table.from_pandas(rows[["item_id", "summary", "caption"]], schema=PART_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({HASH_KEY: dataset_hash.encode(), SETTINGS_KEY: settings_hash.encode()})
    final = parts / f"part-{number:06d}.parquet"
    tmp = parts / f".part-{number:06d}.parquet.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # the part's bytes are on disk before its name appears
    os.replace(tmp, final)
    return final


def _part_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def read_parts(parts: Path, dataset_hash: str, settings_hash: str) -> tuple[pd.DataFrame, int]:
    """Rows of the valid parts (in part order, first row per item kept) and the next part number.

    Leftover temporary files of a killed run are removed; parts of another dataset or other settings are
    removed with a warning (their text would not match what this run generates).
    """
    for tmp in parts.glob(".part-*.tmp-*"):
        tmp.unlink()
    frames, stale, last = [], 0, -1
    for path in sorted(parts.glob(PART_GLOB), key=_part_number):
        last = max(last, _part_number(path))
        table = pq.read_table(path)  # an unreadable part is disk damage, not a kill: let it raise
        meta = table.schema.metadata or {}
        if meta.get(HASH_KEY, b"").decode() != dataset_hash or meta.get(SETTINGS_KEY, b"").decode() != settings_hash:
            path.unlink()
            stale += 1
            continue
        frames.append(table.to_pandas())
    if stale:
        log.warning("removed %d summary parts made for other data or settings in %s; regenerating them", stale, parts)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PART_SCHEMA.names}), last + 1
    rows = pd.concat(frames, ignore_index=True)
    dups = int(rows["item_id"].duplicated().sum())
    if dups:  # cannot happen with one writer at a time; keep the first and say so rather than hide it
        log.warning("%d duplicated item ids across parts in %s; keeping the first of each", dups, parts)
        rows = rows.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    return rows, last + 1


@contextmanager
def _exclusive(parts: Path) -> Iterator[None]:
    """One summariser per prepared folder: two writers would each generate the same pending items."""
    import fcntl  # POSIX; the lock is advisory and released by the OS when a killed process dies

    with open(parts / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another summary run holds {parts / '.lock'}; wait for it to finish") from None
        yield


# ------------------------------------------------------------------ generation


def encode_batch(processor, images: list, prompts: list[str], pad_to_multiple_of: Optional[int] = None):
    """The processor's left-padded model inputs for one batch (CPU tensors). ``pad_to_multiple_of`` rounds the
    length up so a static KV cache sees few distinct shapes (each new shape is a new compile on CUDA)."""
    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}] for p in prompts]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    extra = {"pad_to_multiple_of": pad_to_multiple_of} if pad_to_multiple_of else {}
    return processor(text=texts, images=images, padding=True, return_tensors="pt", **extra)


def generate_encoded(model, decoder, enc, max_new_tokens: int, cache: str = "dynamic") -> list[str]:
    """One greedy ``generate`` over an encoded batch; returns the cleaned new text per row, decoded with
    ``decoder`` (the processor or its tokenizer).

    ``cache="static"``: a preallocated KV cache; on CUDA transformers then compiles the decode step (CUDA
    graphs), which removes the per-token launch overhead that dominates a small model's decoding."""
    import torch

    if cache not in SUMMARY_CACHES:
        raise ValueError(f"unknown summary cache {cache!r}; available: {list(SUMMARY_CACHES)}")
    enc = enc.to(model.device)
    extra = {"cache_implementation": "static"} if cache == "static" else {}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, **extra)  # None: the checkpoint's sampling defaults off
    new = out[:, enc["input_ids"].shape[1]:]  # (B, new): left padding puts every prompt's end at column T
    return [clean_output(t) for t in decoder.batch_decode(new, skip_special_tokens=True)]


def generate_texts(model, processor, images: list, prompts: list[str], max_new_tokens: int,
                   cache: str = "dynamic", pad_to_multiple_of: Optional[int] = None) -> list[str]:
    """One left-padded batch, one greedy ``generate``; returns the cleaned new text per image."""
    return generate_encoded(model, processor, encode_batch(processor, images, prompts, pad_to_multiple_of),
                            max_new_tokens, cache)


def resolve_cache(cache: str, model) -> str:
    """auto → static where transformers compiles the decode step (CUDA, no bitsandbytes weights: transformers
    does not compile those), dynamic elsewhere (a static cache alone is no faster)."""
    if cache != "auto":
        return cache
    quantizer = getattr(model, "hf_quantizer", None)
    compiles = model.device.type == "cuda" and (quantizer is None or quantizer.is_compileable)
    return "static" if compiles else "dynamic"


def prefetched(iterator: Iterator, depth: int = 1) -> Iterator:
    """Run ``iterator`` on a worker thread, ``depth`` items ahead: image decoding and the processor's
    resizing/patching of the next batch overlap the model's generation of this one. Errors are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def put(entry) -> bool:
        """False once the consumer has stopped (the queue may stay full forever)."""
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((end, e))

    worker = threading.Thread(target=work, name="summary-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()  # the consumer stopped early (error, kill): let the worker end
        worker.join(timeout=5)


def _batches(todo: pd.DataFrame, root: Path, size: int, failed: dict) -> Iterator[tuple[list, list, list, int]]:
    """(item ids, images, titles, n_failed) per batch of up to ``size`` decodable images; n_failed counts the
    undecodable images met since the previous batch (tallied per reason in ``failed``)."""
    ids, images, titles, n_failed = [], [], [], 0
    for item_id, rel, title in zip(todo["item_id"], todo["image_path"], todo["title"]):
        image, reason = open_image(root / rel)
        if image is None:
            failed[reason] = failed.get(reason, 0) + 1
            n_failed += 1
            continue
        ids.append(item_id), images.append(image), titles.append(title if isinstance(title, str) else "")
        if len(ids) == size:
            yield ids, images, titles, n_failed
            ids, images, titles, n_failed = [], [], [], 0
    if ids or n_failed:
        yield ids, images, titles, n_failed


# ------------------------------------------------------------------ the stage


def _update_manifest(root: Path, record: dict) -> None:
    """Set manifest['summaries'] by temp file + os.replace; nothing else in the manifest changes."""
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["summaries"] = record
    tmp = path.with_name(f".{MANIFEST_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def summarise(prepared: PreparedDataset, cfg: SummaryConfig, loaded: Optional[tuple] = None) -> dict:
    """Generate the missing summaries/captions of ``prepared``'s items with images; returns the stats record
    (also stored as ``manifest.json['summaries']``).

    ``loaded``: an already loaded ``(model, processor)`` (tests, or callers that keep the model around);
    by default the model is loaded with ``rerank.models.qwen3vl_loading.load_qwen3vl``.
    """
    import torch
    from tqdm.auto import tqdm

    from rerank.item_text import SUMMARIES_FILE, write_summaries
    from rerank.models.llm import pick_device, pick_dtype
    from rerank.models.qwen3vl_loading import load_qwen3vl, quantization_of, resolve_quantization

    items = prepared.items
    if "image_path" not in items.columns or items["image_path"].isna().all():
        raise ValueError(f"{prepared.root} has no item images (items.image_path is missing or empty): attach "
                         f"images with data_prepare.py --image_map FILE before generating summaries")
    has_image = items["image_path"].notna()
    with_image = items.loc[has_image, ["item_id", "image_path", "title"]].reset_index(drop=True)
    selected = with_image if cfg.max_items is None else with_image.head(cfg.max_items)

    if cfg.summary_threads:
        torch.set_num_threads(cfg.summary_threads)
    device = pick_device(cfg.summary_device)
    planned_quant = resolve_quantization(cfg.use_quantization, device, cfg.summary_quant)
    dtype = str(pick_dtype(cfg.summary_dtype, device)).replace("torch.", "")  # resolved: auto differs per machine
    settings = settings_of(cfg, planned_quant, dtype)
    settings_hash = config_hash(settings, n=16)
    dataset_hash = prepared.content_hash
    parts = prepared.root / PARTS_DIR
    parts.mkdir(exist_ok=True)
    started = time.time()
    with _exclusive(parts):
        done, next_part = read_parts(parts, dataset_hash, settings_hash)
        todo = selected[~selected["item_id"].isin(set(done["item_id"]))]
        log.info("summaries: %d items with an image, %d selected, %d already done, %d to generate",
                 len(with_image), len(selected), int(selected["item_id"].isin(set(done["item_id"])).sum()),
                 len(todo))
        model = processor = None
        if len(todo):
            model, processor = loaded or load_qwen3vl(cfg.summary_model, cfg.summary_device, cfg.summary_dtype,
                                                      use_quantization=cfg.use_quantization,
                                                      quant=cfg.summary_quant)
            used = quantization_of(model)
            if used != planned_quant:
                raise ValueError(f"summary model runs with quantization {used!r}, expected {planned_quant!r} "
                                 f"from --use_quantization={cfg.use_quantization}")
        failed: dict[str, int] = {}
        generated = empty = batches = 0
        gen_seconds = 0.0
        cache = resolve_cache(cfg.summary_cache, model) if model is not None else None
        pad = cfg.summary_pad_multiple if cache == "static" else None
        # the worker thread encodes with the processor's tokenizer while this thread decodes: a fast tokenizer
        # must not be used from two threads at once (encode mutates its padding state), so decode with a copy
        decoder = copy.deepcopy(processor.tokenizer) if processor is not None else None

        def encoded() -> Iterator[tuple[list, int, object, object]]:
            for ids, images, titles, n_failed in _batches(todo, prepared.root, cfg.semantic_summary_batch_size,
                                                          failed):
                if not ids:
                    yield ids, n_failed, None, None
                    continue
                summary_enc = encode_batch(processor, images, [prompt_text(SUMMARY_PROMPT, t, cfg.summary_use_title)
                                                               for t in titles], pad)
                caption_enc = (encode_batch(processor, images, [prompt_text(CAPTION_PROMPT, t, cfg.summary_use_title)
                                                                for t in titles], pad)
                               if cfg.summary_captions else None)
                yield ids, n_failed, summary_enc, caption_enc

        bar = tqdm(total=len(todo), unit="item", desc="summaries", dynamic_ncols=True, disable=todo.empty)
        loop_started = time.time()
        for ids, n_failed, summary_enc, caption_enc in prefetched(encoded()):
            bar.update(n_failed)
            if not ids:
                continue
            t0 = time.time()
            summaries = generate_encoded(model, decoder, summary_enc, cfg.max_new_tokens, cache)
            captions = (generate_encoded(model, decoder, caption_enc, cfg.caption_max_new_tokens, cache)
                        if caption_enc is not None else [None] * len(ids))
            gen_seconds += time.time() - t0
            rows = pd.DataFrame({"item_id": ids, "summary": summaries, "caption": captions})
            _write_part(parts, next_part, rows, dataset_hash, settings_hash)
            next_part += 1
            batches += 1
            generated += len(ids)
            empty += sum(1 for s in summaries if not s)
            bar.update(len(ids))
        bar.close()
        loop_seconds = time.time() - loop_started
        done, _ = read_parts(parts, dataset_hash, settings_hash)
        table = done[done["item_id"].isin(set(items["item_id"]))].sort_values("item_id", kind="stable")
        write_summaries(prepared, table.reset_index(drop=True))
    elapsed = time.time() - started
    record = {
        "file": SUMMARIES_FILE,
        "model": cfg.summary_model,
        "quantization": planned_quant,
        "device": str(model.device) if model is not None else None,
        "prompts": settings["prompts"],
        "settings": {"semantic_summary_batch_size": cfg.semantic_summary_batch_size,
                     "max_new_tokens": cfg.max_new_tokens,
                     "caption_max_new_tokens": settings["caption_max_new_tokens"],
                     "use_title": cfg.summary_use_title, "dtype": dtype, "max_items": cfg.max_items,
                     "greedy": True, "kv_cache": cache, "pad_to_multiple_of": pad},
        "settings_hash": settings_hash,
        "dataset_hash": dataset_hash,
        "counts": {
            "items": int(len(items)),
            "with_image": int(len(with_image)),
            "skipped_no_image": int((~has_image).sum()),
            "done": int(len(table)),
            "generated_this_run": generated,
            "failed": {"missing": failed.get("missing", 0), "corrupt": failed.get("corrupt", 0)},
            "empty_summary": empty,
            "batches_this_run": batches,
            "pending": int(len(with_image) - len(table) - sum(failed.values())),
        },
        "seconds": round(elapsed, 3),
        "generation_seconds": round(gen_seconds, 3),  # inside generate; decoding/encoding overlap it
        "items_per_s": round(generated / loop_seconds, 3) if generated else None,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _update_manifest(prepared.root, record)
    c = record["counts"]
    log.info("summaries: %d done (%d this run, %s items/s), %d failed (missing %d, corrupt %d), %d without image",
             c["done"], generated, record["items_per_s"], sum(failed.values()), c["failed"]["missing"],
             c["failed"]["corrupt"], c["skipped_no_image"])
    return record
