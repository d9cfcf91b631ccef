"""Supervised fine-tuning of the verbalizer: LoRA (or QLoRA on a 4-bit NF4 base) on train-split prompts.

Loss: cross-entropy of the target's label over the candidates' label logits at the prompt's last position,
computed exactly like inference scores them (left padding, position ids from the mask, LM head on the last
position only). Validation reuses ``rerank.pipeline.run_mode`` on the val split, so the reported NDCG@10 is what
``run_rerank.py --adapter`` would measure with the same settings.

Reproducibility and resume: the examples, the per-epoch shuffles and the batch of every step are functions of
(dataset, config, seed); the optimizer, scheduler and RNG states are checkpointed in ``last/``. Rerunning the same
command continues from ``last/``; a larger ``--max_steps`` extends a finished run along the same schedule
(warmup, then a constant learning rate), giving the same adapter as one uninterrupted run.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from config import RerankConfig, TrainConfig
from dataset.format import PreparedDataset
from rerank.models.adapters import base_fingerprint, check_adapter_base, write_adapter_meta
from rerank.models.llm import TransformersTextBackend, left_padded_positions, load_tokenizer, pick_device
from rerank.pipeline import find_prepared, run_mode
from rerank.prompts import DOMAIN_NOUNS, LABELS, ItemView, Prompt, PromptBuilder
from rerank.train_checkpoint import (STATE_FILE, TRAIN_CONFIG_FILE, append_log, prepare_output, read_log,
                                     truncate_log, write_dir_atomically)
from rerank.train_data import build_examples, build_prompts
from rerank.verbalizer import resolve_label_ids

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # LoRA on a verbalizer sees sharp, few-token losses; clipping keeps early steps stable


# ---------------------------------------------------------------- model


def use_unsloth(cfg: TrainConfig) -> bool:
    return (cfg.use_unsloth == "auto" and pick_device(cfg.device).type == "cuda"
            and importlib.util.find_spec("unsloth") is not None)


def load_trainable(cfg: TrainConfig) -> TransformersTextBackend:
    """The base (dense or NF4) through the shared loading entry point, with fresh LoRA adapters on top.

    The LoRA init draws from torch's RNG, seeded here, so a run's initial adapter is a function of the seed.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(cfg.seed)
    if use_unsloth(cfg):
        return _load_unsloth(cfg)
    backend = TransformersTextBackend(model_name=cfg.model, device_name=cfg.device, dtype_name=cfg.dtype,
                                      use_quantization=cfg.use_quantization).load()
    model = backend.model
    if cfg.use_quantization:
        # freezes the 4-bit base, keeps norms/embeddings in fp32 for stable backward
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules(), bias="none", task_type="CAUSAL_LM")
    try:
        backend.model = get_peft_model(model, lora)
    except ValueError as e:
        raise ValueError(f"--lora_target_modules {cfg.lora_target_modules!r} for {cfg.model}: {e}") from e
    if hasattr(backend, "prepare_scoring"):  # the backend's scoring path must see the wrapped model
        backend.prepare_scoring()
    n_train = sum(p.numel() for p in backend.model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %d trainable parameters", cfg.lora_r, ",".join(cfg.target_modules()), n_train)
    return backend


def _load_unsloth(cfg: TrainConfig) -> TransformersTextBackend:
    """Unsloth's fused kernels (CUDA only); imported lazily so a missing unsloth costs nothing elsewhere."""
    from unsloth import FastLanguageModel

    from rerank.models.llm import pick_dtype
    from rerank.models.resolve import resolve_model

    source = resolve_model(cfg.model)
    device = pick_device(cfg.device)
    model, _ = FastLanguageModel.from_pretrained(model_name=source, max_seq_length=cfg.max_prompt_tokens,
                                                 dtype=pick_dtype(cfg.dtype, device),
                                                 load_in_4bit=cfg.use_quantization)
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules(), bias="none", random_state=cfg.seed,
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False)
    backend = TransformersTextBackend(model_name=cfg.model, device_name=cfg.device, dtype_name=cfg.dtype,
                                      use_quantization=cfg.use_quantization)
    backend.device, backend.dtype, backend.source = device, pick_dtype(cfg.dtype, device), source
    backend.tokenizer = load_tokenizer(source)  # our padding conventions, not Unsloth's tokenizer patching
    backend.model = model
    log.info("Unsloth LoRA on %s", source)
    return backend


def label_logits(model, tokenizer, prompts: Sequence[Prompt], label_ids: Sequence[int], device) -> torch.Tensor:
    """(B, L) label logits at the last position, with gradients; labels past a prompt's candidates are -inf.

    The same forward as ``TransformersTextBackend.last_logits`` (which runs under inference_mode).
    """
    enc = tokenizer([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].to(device)  # (B, T), left-padded
    mask = enc["attention_mask"].to(device)  # (B, T)
    out = model(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                logits_to_keep=1, use_cache=False)
    idx = torch.as_tensor(list(label_ids), device=device)
    lab = out.logits[:, -1, :].index_select(-1, idx).float()  # (B, L)
    n = torch.tensor([len(p.candidates) for p in prompts], device=device)  # (B,)
    absent = torch.arange(lab.shape[1], device=device)[None, :] >= n[:, None]  # (B, L)
    return lab.masked_fill(absent, float("-inf"))


def label_loss(model, tokenizer, prompts, targets: Sequence[int], label_ids, device) -> torch.Tensor:
    """Mean cross-entropy of the target labels (``targets``: the target's index in each prompt)."""
    logits = label_logits(model, tokenizer, prompts, label_ids, device)  # (B, L)
    return F.cross_entropy(logits, torch.as_tensor(list(targets), device=device))


def prompt_label_ids(tokenizer, builder: PromptBuilder) -> list[int]:
    """Label ids as ``rerank.pipeline.run_mode`` resolves them (against a rendered prompt's ending)."""
    dummy = [ItemView(str(i), "x") for i in range(len(LABELS))]
    return resolve_label_ids(tokenizer, LABELS, builder.render([], dummy, 10, 0))


# ---------------------------------------------------------------- schedule and data order


def make_optimizer(model, cfg: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # linear warmup then constant: independent of the total step count, so extending max_steps stays exact
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    return opt, sched


def micro_batch(n_examples: int, batch_size: int, m: int, seed: int) -> list[int]:
    """Example indices of global micro-batch ``m``: the epochs' seeded shuffles, concatenated."""
    out = []
    for pos in range(m * batch_size, (m + 1) * batch_size):
        epoch, i = divmod(pos, n_examples)
        perm = list(range(n_examples))
        random.Random(f"{seed}:epoch:{epoch}").shuffle(perm)
        out.append(perm[i])
    return out


def total_steps(cfg: TrainConfig, n_examples: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return cfg.epochs * math.ceil(n_examples / (cfg.train_batch_size * cfg.grad_accum))


# ---------------------------------------------------------------- checkpoints


def rng_states() -> dict:
    s = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_adapter(dst: Path, model, cfg: TrainConfig, fingerprint: dict, step: int, extra=None) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        write_adapter_meta(tmp, fingerprint, {"step": step, "train_config": asdict(cfg), **(extra or {})})
    write_dir_atomically(dst, write)


def save_last(out: Path, model, opt, sched, cfg: TrainConfig, fingerprint: dict, step: int, best: dict,
              train_time_s: float) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        write_adapter_meta(tmp, fingerprint, {"step": step, "train_config": asdict(cfg)})
        torch.save({"step": step, "best": best, "train_time_s": train_time_s, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": rng_states()}, tmp / STATE_FILE)
        (tmp / TRAIN_CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2))
    write_dir_atomically(out / "last", write)


def load_last(last: Path, model, opt, sched, cfg: TrainConfig) -> dict:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    check_adapter_base(model, last, cfg.model)
    weights = load_file(str(last / "adapter_model.safetensors"), device=str(model.device))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{last}: adapter weights do not fit the model: {result.unexpected_keys[:3]}")
    state = torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)  # our own file
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    return state


# ---------------------------------------------------------------- validation and the loop


def validate(cfg: TrainConfig, prepared: PreparedDataset, backend, out: Path, step: int) -> dict:
    """Val-split metrics of the current adapter through the inference pipeline (same prompts and scoring)."""
    vcfg = RerankConfig(data=str(prepared.root), retriever=cfg.retriever, split="val", mode=cfg.mode,
                        model=cfg.model, max_history=cfg.max_history, max_title_chars=cfg.max_title_chars,
                        max_text_chars=cfg.max_text_chars, max_prompt_tokens=cfg.max_prompt_tokens,
                        llm_batch_size=cfg.eval_batch_size, seed=cfg.seed, max_users=cfg.val_users,
                        output_dir=str(out / "val" / f"step-{step:06d}"))
    backend.model.eval()  # no LoRA dropout while scoring
    try:
        m = run_mode(vcfg, backend)
    finally:
        backend.model.train()
    o, sub = m["reranker"]["overall"], m["reranker"]["subset"] or {}
    return {"ndcg@10": o["ndcg@10"], "recall@10": o["recall@10"], "subset_ndcg@10": sub.get("ndcg@10"),
            "n_users": m["n_users"]}


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and return the summary (also written to ``<out>/summary.json``)."""
    t_start = time.time()
    prepared = find_prepared(cfg)  # type: ignore[arg-type]  (reads .data / .dataset only)
    out = cfg.resolved_output_dir(prepared.name)
    if cfg.eval_every and not prepared.candidates_path(cfg.retriever, "val").is_file():
        raise FileNotFoundError(f"validation needs {prepared.candidates_path(cfg.retriever, 'val')}: prepare with "
                                f"--retriever {cfg.retriever}, or pass --eval_every 0")
    resume_from = prepare_output(out, cfg)

    backend = load_trainable(cfg)
    model, tok, device = backend.model, backend.tokenizer, backend.device
    builder = PromptBuilder(tok, cfg.max_history, cfg.max_prompt_tokens, cfg.max_title_chars, cfg.max_text_chars,
                            DOMAIN_NOUNS.get(prepared.name, "items"))
    label_ids = prompt_label_ids(tok, builder)
    examples = build_examples(prepared, cfg.train_positions_per_user, cfg.n_candidates, cfg.train_negatives,
                              cfg.max_history, cfg.seed, cfg.max_train_users)
    prompts = build_prompts(prepared, examples, builder, cfg.mode)
    n_steps = total_steps(cfg, len(examples))
    fingerprint = base_fingerprint(model, cfg.model, backend.source)
    opt, sched = make_optimizer(model, cfg)

    step, best, time_before = 0, {"step": None, "ndcg@10": None}, 0.0
    if resume_from is not None:
        state = load_last(resume_from, model, opt, sched, cfg)
        step, best, time_before = state["step"], state["best"], state.get("train_time_s", 0.0)
        truncate_log(out, step)
        log.info("resuming %s at step %d of %d", out, step, n_steps)
    log.info("%d training examples (%d prompt tokens on average), %d optimizer steps of %d x %d prompts",
             len(examples), int(np.mean([p.n_tokens for p in prompts])), n_steps, cfg.train_batch_size,
             cfg.grad_accum)

    model.train()
    t_train = time.time()

    def train_time() -> float:  # optimizer-step time over all runs of this folder, validation included
        return time_before + time.time() - t_train

    bar = tqdm(total=n_steps, initial=step, desc="training", unit="step")
    last_loss = None
    while step < n_steps:
        loss_sum = 0.0
        for a in range(cfg.grad_accum):
            idx = micro_batch(len(examples), cfg.train_batch_size, step * cfg.grad_accum + a, cfg.seed)
            loss = label_loss(model, tok, [prompts[i] for i in idx], [examples[i].target_index for i in idx],
                              label_ids, device)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        last_loss = loss_sum / cfg.grad_accum
        append_log(out, {"step": step, "loss": round(last_loss, 6), "lr": sched.get_last_lr()[0],
                         "examples_seen": step * cfg.train_batch_size * cfg.grad_accum,
                         "train_time_s": round(train_time(), 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}")
        is_last = step == n_steps
        if cfg.eval_every and (step % cfg.eval_every == 0 or is_last):
            val = validate(cfg, prepared, backend, out, step)
            improved = best["ndcg@10"] is None or val["ndcg@10"] > best["ndcg@10"]
            if improved:
                best = {"step": step, "ndcg@10": val["ndcg@10"]}
                save_adapter(out / "best", model, cfg, fingerprint, step, {"val": val})
            append_log(out, {"step": step, "val": val, "best": improved})
            log.info("step %d: val ndcg@10 %.4f (best %.4f at step %s)", step, val["ndcg@10"], best["ndcg@10"],
                     best["step"])
        if is_last or (cfg.save_every and step % cfg.save_every == 0) or (cfg.eval_every and step % cfg.eval_every == 0):
            save_last(out, model, opt, sched, cfg, fingerprint, step, best, train_time())
    bar.close()
    if not cfg.eval_every and (out / "last").is_dir():
        # no validation: the final adapter is the best one we know of
        write_dir_atomically(out / "best", lambda tmp: _copy_adapter(out / "last", tmp))
        best = {"step": step, "ndcg@10": None}

    train_lines = [r for r in read_log(out) if "loss" in r]
    summary = {"output_dir": str(out), "steps": step, "examples": len(examples),
               "examples_seen": step * cfg.train_batch_size * cfg.grad_accum,
               "mean_prompt_tokens": float(np.mean([p.n_tokens for p in prompts])),
               "first_loss": train_lines[0]["loss"] if train_lines else None,
               "final_loss": train_lines[-1]["loss"] if train_lines else last_loss,
               "train_time_s": round(train_lines[-1]["train_time_s"], 1) if train_lines else 0.0,
               "wall_time_this_invocation_s": round(time.time() - t_start, 1), "best": best, "device": str(device),
               "model": backend.describe(), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _copy_adapter(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.name not in (STATE_FILE, TRAIN_CONFIG_FILE):
            shutil.copy2(f, dst / f.name)

