"""Speed benchmark of the scoring/summary backends on the REAL architectures with random weights.

Speed does not depend on the weights' values, so the models are built from the real config.json files
(``../shared/models/*`` or ``--configs DIR``) with random weights at real size (``--tiny``: shrunk, a smoke run)
and saved once to a temp folder, then loaded through the library's own loaders. Every variant sees the same
seeded inputs. Not a test, not imported by the library.

    python bench/bench_speed.py --device cuda --out bench/results/h100.md            # the GPU table
    python bench/bench_speed.py --device cpu --sections text --prompt_tokens 256 --n_prompts 4 \\
        --batch_sizes 4 --out bench/results/cpu.md                                     # what fits on 2 cores

Rows: text verbalizer (naive one-at-a-time plain transformers, batched fp32/bf16, NF4, int8, Unsloth 4-bit when
it imports, optional torch.compile), Qwen3-VL summaries (64 new tokens, batch 1/8/32/128, bf16 and NF4, dynamic and static KV cache) and
raw_image rerank (5 history + 20 candidate images). Each row: prompts/s (images/s for summaries), peak memory
(CUDA: max_memory_allocated; CPU: peak RSS sampled every 20 ms) and the FLOP limit at the measured matmul rate.
Writes Markdown to --out and the same data as JSON next to it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import random
import shutil
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench")
TEXT_DIR, VL_DIR = "qwen3-0.6b", "qwen3-vl-2b-instruct"


# ----------------------------------------------------------------------------- measuring

class PeakMemory:
    """Peak memory of the block: CUDA allocator peak, or the process RSS sampled on a thread (CPU)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()

            def sample():
                while not self._stop.wait(0.02):
                    self.peak = max(self.peak, proc.memory_info().rss)
            self.peak = proc.memory_info().rss
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured dense matmul rate (GFLOP/s) of an n x n x n product: the ceiling the FLOP limits use."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def forward_gflop(cfg, n_tokens: int) -> float:
    """≈ FLOP of one forward over n_tokens: 2 x matmul params x tokens + causal attention (QK^T and AV)."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * cfg.intermediate_size
    attn = 2 * 2 * layers * q * n_tokens * n_tokens / 2  # causal: half the T x T scores
    return (2 * per_layer * layers * n_tokens + attn) / 1e9


# ----------------------------------------------------------------------------- models and inputs

def find_configs(arg: str | None) -> Path:
    cands = [Path(arg)] if arg else [REPO.parent / "shared" / "models", REPO / "bench" / "models"]
    for c in cands:
        if (c / TEXT_DIR / "config.json").is_file():
            return c
    raise FileNotFoundError(f"no {TEXT_DIR}/config.json under {[str(c) for c in cands]}; pass --configs DIR "
                            f"(a copy of ../shared/models: config + tokenizer/processor files)")


def shrink_text(cfg) -> None:
    cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = 2, 64, 128
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 4, 2, 16
    cfg.max_window_layers = 2
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:2]


def build_model(src: Path, out: Path, vision: bool, tiny: bool, dtype: torch.dtype) -> Path:
    """Random weights for the architecture in ``src/config.json``, saved with the tokenizer/processor files."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(src)
    if tiny and vision:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_models import build_tiny_qwen3vl  # noqa: E402  (same shrink as the tests)

        return build_tiny_qwen3vl(out)
    if tiny:
        shrink_text(cfg)
    torch.manual_seed(0)
    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    model = cls.from_config(cfg, dtype=dtype)
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.name != "config.json" and f.is_file():
            shutil.copy(f, out / f.name)
    return out


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(n))


def text_prompts(tokenizer, n: int, tokens: int, seed: int = 0):
    """n prompts of ~``tokens`` tokens each: many long history items, cut to the budget by the builder."""
    from rerank.prompts import ItemView, PromptBuilder

    rng = random.Random(seed)
    n_hist = max(4, tokens // 40)  # ~60 tokens per item: more than fit, so the builder trims to the budget
    b = PromptBuilder(tokenizer, max_history=n_hist, max_prompt_tokens=tokens, detail_chars=200)
    out = []
    for u in range(n):
        hist = [ItemView(f"h{i}", words(rng, 4), words(rng, 40)) for i in range(n_hist)]
        cands = [ItemView(f"c{i}", words(rng, 4)) for i in range(20)]
        out.append(b.build(f"u{u}", hist, cands))
    return out


def synthetic_images(folder: Path, n: int, size=(336, 224), seed: int = 0) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"img{k:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


# ----------------------------------------------------------------------------- sections

def timed(device, fn, n_items: int) -> tuple[float, int, float]:
    """(items/s, peak bytes, seconds) of fn(), after it has been called once as warm-up by the caller."""
    with PeakMemory(device) as mem:
        t = time.perf_counter()
        fn()
        sync(device)
        sec = time.perf_counter() - t
    return n_items / sec, mem.peak, sec


def bench_text(args, device, model_dir: Path, rows: list, rate: float) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from rerank.batching import score_prompts
    from rerank.models.base import get_backend
    from rerank.models.llm import load_tokenizer
    from rerank.models.select import unsloth_installed
    from rerank.verbalizer import resolve_label_ids
    from rerank.prompts import LABELS

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = load_tokenizer(str(model_dir))
    prompts = text_prompts(tok, args.n_prompts, args.prompt_tokens)
    ids = resolve_label_ids(tok, LABELS, prompts[0].text)
    mean_tokens = sum(p.n_tokens for p in prompts) / len(prompts)
    gflop = forward_gflop(cfg, int(mean_tokens))
    base = dict(workload=f"text verbalizer, {mean_tokens:.0f}-token prompts", gflop_per_item=gflop,
                limit_items_s=rate / gflop)
    dense = "bfloat16" if device.type == "cuda" else "float32"

    def add(variant, bs, speed, peak, sec):
        rows.append({**base, "variant": variant, "batch": bs, "items_s": speed, "peak_gib": peak / 2 ** 30,
                     "seconds": sec})
        log.info("%s B%s: %.2f prompts/s, peak %.2f GiB", variant, bs, speed, peak / 2 ** 30)

    if "naive" in args.variants:  # plain transformers, one prompt at a time, full head over all positions
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dense)).to(device).eval()

        def naive():
            with torch.inference_mode():
                for p in prompts:
                    x = tok(p.text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
                    m(input_ids=x).logits[0, -1, ids].float().cpu()
        naive_one = prompts[:1]
        with torch.inference_mode():
            m(input_ids=tok(naive_one[0].text, return_tensors="pt")["input_ids"].to(device))
        add(f"naive one-by-one, plain transformers {dense}", 1, *timed(device, naive, len(prompts)))
        del m
    variants = []
    for v in args.variants:
        if v in ("fp32", "bf16", "fp16"):
            variants.append((f"batched {v}", "transformers", {"dtype_name": v}))
        elif v in ("nf4", "int8"):
            variants.append((f"batched {v} (bitsandbytes)", "transformers", {"quantization": v}))
        elif v == "compile":
            variants.append((f"batched {dense} + torch.compile({args.compile_mode})", "transformers",
                             {"dtype_name": dense, "use_torch_compile": True, "torch_compile_mode": args.compile_mode,
                              "pad_to_multiple_of": 64}))
    if "unsloth" in args.variants:  # last: importing unsloth patches transformers for everything after it
        if unsloth_installed():
            variants.append(("Unsloth 4-bit", "unsloth", {}))
        else:
            log.warning("unsloth not installed: Unsloth row skipped")
    for label, name, kw in variants:
        t0 = time.perf_counter()
        be = get_backend(name)(model_name=str(model_dir), device_name=str(device), **kw).load()
        for bs in args.batch_sizes:
            score_prompts(be, prompts[:bs], ids, batch_size=bs, progress=False)  # warm-up (and compile)
            speed, peak, sec = timed(device, lambda: score_prompts(be, prompts, ids, batch_size=bs, progress=False),
                                     len(prompts))
            add(label, bs, speed, peak, sec)
        rows[-1]["startup_s"] = round(time.perf_counter() - t0 - rows[-1]["seconds"], 1)
        del be
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_vl(args, device, model_dir: Path, work: Path, rows: list, rate: float) -> None:
    from transformers import AutoConfig

    from dataset.qwen3vl_semantic_summary import generate_texts
    from rerank.batching import score_prompts
    from rerank.models.qwen3vl import Qwen3VLBackend, open_rgb
    from rerank.prompts import LABELS, ItemView, PromptBuilder
    from rerank.verbalizer import resolve_label_ids

    tcfg = AutoConfig.from_pretrained(model_dir).text_config
    images = synthetic_images(work / "images", max(max(args.summary_batches), 25))
    dense = "bfloat16" if device.type == "cuda" else "float32"
    for quant in args.vl_quant:
        be = Qwen3VLBackend(model_name=str(model_dir), device_name=str(device), dtype_name=dense,
                            quantization=None if quant == dense else quant).load()
        be.model.generation_config.eos_token_id = None  # random weights: always generate the full 64 tokens
        be.model.generation_config.pad_token_id = be.tokenizer.pad_token_id
        if "summary" in args.sections:
            for cache in args.summary_cache:
                if cache == "static" and quant != dense and device.type == "cuda":
                    log.info("summary %s: static cache skipped (transformers does not compile bitsandbytes "
                             "models, so a static cache alone brings nothing)", quant)
                    continue
                for bs in args.summary_batches:
                    pics = [open_rgb(p) for p in images[:bs]]
                    texts = ["Describe this item in one sentence."] * bs
                    pad = 64 if cache == "static" else None

                    def run(n_new=args.new_tokens):
                        return generate_texts(be.model, be.processor, pics, texts, n_new, cache=cache,
                                              pad_to_multiple_of=pad)

                    t0 = time.perf_counter()
                    if cache == "static":  # warm-up with the timed call's shapes, so the compile is done
                        run()
                    else:
                        generate_texts(be.model, be.processor, pics[:1], texts[:1], 2)
                    startup = time.perf_counter() - t0
                    n_img = be.image_tokens(images[0])
                    speed, peak, sec = timed(device, run, bs)
                    gflop = forward_gflop(tcfg, n_img + 30) + args.new_tokens * forward_gflop(tcfg, 1)
                    rows.append({"workload": f"Qwen3-VL summaries, {args.new_tokens} new tokens",
                                 "variant": f"{quant}, {cache} cache", "batch": bs, "items_s": speed,
                                 "peak_gib": peak / 2 ** 30, "seconds": sec, "gflop_per_item": gflop,
                                 "limit_items_s": rate / gflop, "startup_s": round(startup, 1)})
                    log.info("summary %s %s cache B%d: %.2f img/s", quant, cache, bs, speed)
        if "vl_rerank" in args.sections:
            b = PromptBuilder(be.tokenizer, max_history=5, max_prompt_tokens=16384, noun="movies",
                              templater=be.processor, image_tokens=be.image_tokens)
            rng = random.Random(0)
            prompts = []
            for u in range(args.vl_prompts):
                pick = rng.sample(images, 25)
                hist = [ItemView(f"h{i}", words(rng, 4), image=pick[i]) for i in range(5)]
                cands = [ItemView(f"c{i}", words(rng, 4), image=pick[5 + i]) for i in range(20)]
                prompts.append(b.build(f"u{u}", hist, cands))
            ids = resolve_label_ids(be.tokenizer, LABELS, prompts[0].text)
            mean_tokens = sum(p.n_tokens for p in prompts) / len(prompts)
            gflop = forward_gflop(tcfg, int(mean_tokens))
            for bs in args.vl_batches:
                score_prompts(be, prompts[:bs], ids, batch_size=bs, progress=False)
                speed, peak, sec = timed(device, lambda: score_prompts(be, prompts, ids, batch_size=bs,
                                                                       progress=False), len(prompts))
                rows.append({"workload": f"raw_image rerank, 25 images, {mean_tokens:.0f} tokens", "variant": quant,
                             "batch": bs, "items_s": speed, "peak_gib": peak / 2 ** 30, "seconds": sec,
                             "gflop_per_item": gflop, "limit_items_s": rate / gflop})
                log.info("raw_image %s B%d: %.2f prompts/s", quant, bs, speed)
        del be
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- report

def environment(device: torch.device, rate: float, dtype: torch.dtype) -> dict:
    import transformers

    env = {"date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           f"matmul_gflops_{str(dtype).replace('torch.', '')}": round(rate, 1), "threads": torch.get_num_threads()}
    for pkg in ("bitsandbytes", "unsloth", "flash_attn"):
        try:
            from importlib.metadata import version

            env[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - PackageNotFoundError: record absence
            env[pkg] = None
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
        env["device"] = f"CPU {model}, {torch.get_num_threads()} threads"
    return env


def markdown(env: dict, rows: list) -> str:
    head = "\n".join(f"- {k}: `{v}`" for k, v in env.items())
    lines = ["| workload | variant | batch | items/s | peak GiB | GFLOP/item | FLOP limit items/s | % of limit | start-up s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['variant']} | {r['batch']} | {r['items_s']:.2f} | {r['peak_gib']:.2f} | "
                     f"{r['gflop_per_item']:.1f} | {r['limit_items_s']:.2f} | "
                     f"{100 * r['items_s'] / r['limit_items_s']:.0f}% | {r.get('startup_s', '')} |")
    return head + "\n\n" + "\n".join(lines) + "\n"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="bench/results/bench.md")
    p.add_argument("--configs", help="folder with qwen3-0.6b/ and qwen3-vl-2b-instruct/ (default ../shared/models)")
    p.add_argument("--tiny", action="store_true", help="shrunk models (smoke run), not the real sizes")
    p.add_argument("--sections", default="text,summary,vl_rerank")
    p.add_argument("--variants", default="naive,bf16,nf4,int8,unsloth",
                   help="text rows: naive, fp32, bf16, fp16, nf4, int8, compile, unsloth")
    p.add_argument("--compile_mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--n_prompts", type=int, default=256)
    p.add_argument("--prompt_tokens", type=int, default=1024)
    p.add_argument("--batch_sizes", default="16,32,64")
    p.add_argument("--summary_batches", default="1,8,32,128")
    p.add_argument("--summary_cache", default="dynamic,static",
                   help="KV cache of the summary rows: dynamic and/or static (static compiles the decode on CUDA)")
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--vl_quant", default="bf16,nf4", help="summary / raw_image variants: bf16 (dense) and/or nf4")
    p.add_argument("--vl_prompts", type=int, default=32)
    p.add_argument("--vl_batches", default="1,4,8")
    a = p.parse_args(argv)
    a.sections, a.variants = a.sections.split(","), a.variants.split(",")
    a.batch_sizes = [int(x) for x in a.batch_sizes.split(",")]
    a.summary_batches = [int(x) for x in a.summary_batches.split(",")]
    a.vl_batches = [int(x) for x in a.vl_batches.split(",")]
    a.summary_cache = a.summary_cache.split(",")
    dense = "bfloat16" if a.device.startswith("cuda") else "float32"
    a.vl_quant = [dense if q in ("bf16", "dense") else q for q in a.vl_quant.split(",")]
    return a


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(argv)
    device = torch.device(args.device)
    dense = torch.bfloat16 if device.type == "cuda" else torch.float32
    rate = matmul_gflops(device, dense)
    env = environment(device, rate, dense)
    configs = find_configs(args.configs)
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if "text" in args.sections:
            bench_text(args, device, build_model(configs / TEXT_DIR, work / "text", False, args.tiny, dense), rows, rate)
        if {"summary", "vl_rerank"} & set(args.sections):
            vl = build_model(configs / VL_DIR, work / "vl", True, args.tiny, dense)
            bench_vl(args, device, vl, work, rows, rate)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env["tiny_models"] = args.tiny
    out.write_text(markdown(env, rows))
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    log.info("wrote %s and %s", out, out.with_suffix(".json"))


if __name__ == "__main__":
    main()
