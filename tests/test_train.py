"""Fine-tuning the verbalizer (rerank.train) on a tiny real Qwen3 (random weights, real tokenizer), CPU.

Checked against independent computations: label losses and target ranks recomputed with a plain unpadded
transformers forward through peft's own loader; saved adapters compared with the in-memory model; a resumed run
compared weight by weight with an uninterrupted one.
"""
import json
import math

import pandas as pd
import pytest
import torch

import run_rerank
from config import RerankConfig, TrainConfig
from rerank.models.adapters import ADAPTER_CONFIG, ADAPTER_META, AdapterMismatchError, base_fingerprint
from rerank.models.llm import TransformersTextBackend, load_tokenizer
from rerank.prompts import LABELS, PromptBuilder
from rerank.batching import score_prompts
from rerank.train import label_loss, load_trainable, make_optimizer, prompt_label_ids, save_adapter, train
from rerank.train_checkpoint import TrainConfigMismatchError, read_log
from rerank.train_data import build_examples, build_prompts
from retrieval_helpers import make_prepared
from tiny_models import build_tiny_qwen3, tiny_qwen3_dir

N_CANDS = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and on a busy 2-core box the threads fight (see RetrievalConfig)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """16 users walking a ring of 40 items (next = previous + 1, with a per-user stride), val/test candidates."""
    root = tmp_path_factory.mktemp("train") / "synthetic"
    seqs = {f"u{u:02d}": [f"i{(3 * u + k * (1 + u % 2)) % 40:02d}" for k in range(9)] for u in range(16)}
    prep = make_prepared(root, seqs)
    items = sorted(prep.items.index)
    for split in ("val", "test"):
        rows = []
        for ex in prep.examples(split):
            others = [i for i in items if i != ex.target and i not in ex.history][: N_CANDS - 1]
            cands = others[:2] + [ex.target] + others[2:]
            rows.append({"user_id": ex.user_id, "candidates": cands, "scores": [float(-k) for k in range(N_CANDS)]})
        path = prep.candidates_path("popularity", split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path)
    return prep


def cfg_for(prepared, out, **kw) -> TrainConfig:
    base = dict(data=str(prepared.root), retriever="popularity", model=str(tiny_qwen3_dir()), output_dir=str(out),
                n_candidates=N_CANDS, max_history=2, train_batch_size=2, eval_every=0, val_users=4, lr=1e-2,
                train_positions_per_user=1)
    return TrainConfig(**{**base, **kw})


def plain_label_logits(model, tok, text: str, n: int) -> torch.Tensor:
    """Independent reference: one unpadded forward, the label letters' logits at the last position."""
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    letters = [tok.convert_tokens_to_ids(LABELS[i]) for i in range(n)]
    with torch.no_grad():
        return model(input_ids=ids, logits_to_keep=1).logits[0, -1, letters]


def loss_and_rank(model, tok, prompts, examples) -> tuple[float, float]:
    losses, ranks = [], []
    for p, ex in zip(prompts, examples):
        z = plain_label_logits(model, tok, p.text, len(p.candidates))
        losses.append(float(torch.logsumexp(z, 0) - z[ex.target_index]))
        ranks.append(int((z > z[ex.target_index]).sum()))
    return sum(losses) / len(losses), sum(ranks) / len(ranks)


def test_training_examples_come_from_the_train_part_with_uniform_labels(prepared):
    exs = build_examples(prepared, positions_per_user=3, n_candidates=N_CANDS, negatives="popular", max_history=2)
    assert len(exs) == 16 * 3
    for ex in exs:
        full = prepared.sequences.at[ex.user_id, "items"]
        train_part = full[:-2]
        assert ex.position < len(train_part) and ex.target == train_part[ex.position]
        assert list(ex.history) == train_part[: ex.position][-2:]
        assert ex.candidates[ex.target_index] == ex.target and len(set(ex.candidates)) == N_CANDS
        assert not (set(ex.candidates) - {ex.target}) & set(full)  # negatives: never the user's items
        assert full[-1] not in ex.candidates and full[-2] not in ex.candidates  # no val/test target
    assert len({ex.target_index for ex in exs}) == N_CANDS  # the target is shuffled over every label
    again = build_examples(prepared, positions_per_user=3, n_candidates=N_CANDS, negatives="popular", max_history=2)
    assert again == exs  # a pure function of (data, config, seed): resume rebuilds the same examples


def test_training_lowers_label_loss_and_raises_target_rank(prepared, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # 4 training prompts seen every step: the adapter must fit them
    cfg = cfg_for(prepared, tmp_path / "ft", max_steps=6, max_train_users=4, train_batch_size=4, lora_dropout=0.0)
    summary = train(cfg)
    assert summary["steps"] == 6 and (tmp_path / "ft" / "best" / ADAPTER_CONFIG).is_file()

    tok = load_tokenizer(cfg.model)
    builder = PromptBuilder(tok, cfg.max_history, cfg.max_prompt_tokens, cfg.max_title_chars, cfg.max_text_chars)
    exs = build_examples(prepared, 1, N_CANDS, "random", cfg.max_history, cfg.seed, max_users=4)
    prompts = build_prompts(prepared, exs, builder)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir()).eval()
    loss0, rank0 = loss_and_rank(base, tok, prompts, exs)
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "ft" / "best")).eval()
    loss1, rank1 = loss_and_rank(tuned, tok, prompts, exs)
    assert loss1 < loss0 - 0.2, (loss0, loss1)
    assert rank1 < rank0, (rank0, rank1)


def test_saved_adapter_scores_like_the_in_memory_model(prepared, tmp_path):
    cfg = cfg_for(prepared, tmp_path / "unused", lora_dropout=0.0)
    backend = load_trainable(cfg)
    model, tok = backend.model, backend.tokenizer
    builder = PromptBuilder(tok, cfg.max_history, cfg.max_prompt_tokens, cfg.max_title_chars, cfg.max_text_chars)
    label_ids = prompt_label_ids(tok, builder)
    exs = build_examples(prepared, 1, N_CANDS, "random", cfg.max_history, cfg.seed)[:6]
    prompts = build_prompts(prepared, exs, builder)
    opt, _ = make_optimizer(model, cfg)
    for _ in range(3):
        label_loss(model, tok, prompts, [e.target_index for e in exs], label_ids, backend.device).backward()
        opt.step()
        opt.zero_grad()
    save_adapter(tmp_path / "adapter", model, cfg, base_fingerprint(model, cfg.model), 3)
    model.eval()
    in_memory = [plain_label_logits(model, tok, p.text, N_CANDS).tolist() for p in prompts]
    loaded = TransformersTextBackend(model_name=cfg.model, adapter=str(tmp_path / "adapter")).load()
    from_disk = score_prompts(loaded, prompts, label_ids, batch_size=4, progress=False)  # padded batches
    torch.testing.assert_close(torch.tensor(from_disk), torch.tensor(in_memory), atol=1e-4, rtol=0)
    with loaded.model.disable_adapter():
        base_scores = plain_label_logits(loaded.model, tok, prompts[0].text, N_CANDS).tolist()
    assert base_scores != pytest.approx(in_memory[0], abs=1e-3)  # the adapter really changed the scores


def test_run_rerank_with_adapter_end_to_end(prepared, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train(cfg_for(prepared, tmp_path / "ft", max_steps=2, eval_every=1, lora_dropout=0.0))
    log = read_log(tmp_path / "ft")
    vals = [r for r in log if "val" in r]
    assert [r["step"] for r in vals] == [1, 2] and (tmp_path / "ft" / "val" / "step-000002" / "metrics.json").is_file()
    best_step = json.loads((tmp_path / "ft" / "best" / ADAPTER_META).read_text())["step"]
    assert best_step == max(vals, key=lambda r: (r["val"]["ndcg@10"], -r["step"]))["step"]

    out = tmp_path / "run"
    assert run_rerank.main(["--data", str(prepared.root), "--retriever", "popularity", "--model",
                            str(tiny_qwen3_dir()), "--adapter", str(tmp_path / "ft"), "--max_users", "2",
                            "--max_history", "2", "--output_dir", str(out),
                            "--dump_prompts", str(tmp_path / "p.jsonl")]) == 0
    assert "reranker (overall)" in capsys.readouterr().out
    pred = pd.read_parquet(out / "predictions.parquet").set_index("user_id")
    prompts = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_dir())
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir()),
                                    str(tmp_path / "ft" / "best")).eval()
    for p in prompts:
        want = plain_label_logits(ref, tok, p["prompt"], N_CANDS).tolist()
        assert list(pred.at[p["user_id"], "scores"]) == pytest.approx(want, abs=1e-4)


def test_adapter_for_another_base_is_refused_naming_both(prepared, tmp_path):
    train(cfg_for(prepared, tmp_path / "ft", max_steps=1))
    other_weights = build_tiny_qwen3(tmp_path / "other-seed", seed=1)  # same architecture, other weights
    with pytest.raises(AdapterMismatchError, match="different weights") as e:
        TransformersTextBackend(model_name=str(other_weights), adapter=str(tmp_path / "ft")).load()
    assert str(other_weights) in str(e.value) and str(tiny_qwen3_dir()) in str(e.value)

    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny_qwen3_dir())
    cfg.num_hidden_layers, cfg.layer_types = 1, (cfg.layer_types or [None])[:1]
    other_arch = tmp_path / "one-layer"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(other_arch)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (other_arch / f).write_bytes((tiny_qwen3_dir() / f).read_bytes())
    with pytest.raises(AdapterMismatchError, match="config hash") as e:
        run_rerank.main(["--data", str(prepared.root), "--retriever", "popularity", "--model", str(other_arch),
                         "--adapter", str(tmp_path / "ft" / "best"), "--max_users", "1",
                         "--output_dir", str(tmp_path / "r")])
    assert str(other_arch) in str(e.value) and str(tiny_qwen3_dir()) in str(e.value)

    # a foreign peft adapter (no adapter_meta.json) is checked by its recorded base name
    meta_less = tmp_path / "ft" / "best"
    (meta_less / ADAPTER_META).unlink()
    conf = json.loads((meta_less / ADAPTER_CONFIG).read_text())
    (meta_less / ADAPTER_CONFIG).write_text(json.dumps({**conf, "base_model_name_or_path": "someone/other-model"}))
    with pytest.raises(AdapterMismatchError, match="someone/other-model"):
        TransformersTextBackend(model_name=str(tiny_qwen3_dir()), adapter=str(meta_less)).load()
    with pytest.raises(ValueError, match="text model"):
        RerankConfig(mode="raw_image", adapter=str(meta_less))


def _adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_continues_at_the_saved_step_like_an_uninterrupted_run(prepared, tmp_path):
    kw = dict(max_history=2, lora_dropout=0.1, warmup_steps=2, lr=5e-3)  # dropout: RNG state must be restored
    full = train(cfg_for(prepared, tmp_path / "full", max_steps=5, **kw))
    first = train(cfg_for(prepared, tmp_path / "split", max_steps=2, **kw))
    assert first["steps"] == 2
    resumed = train(cfg_for(prepared, tmp_path / "split", max_steps=5, **kw))  # same command, larger budget
    assert resumed["steps"] == full["steps"] == 5
    steps = [r["step"] for r in read_log(tmp_path / "split") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5]  # continued at step 3, nothing repeated
    assert [r["loss"] for r in read_log(tmp_path / "split")] == pytest.approx(
        [r["loss"] for r in read_log(tmp_path / "full")], abs=1e-5)
    a, b = _adapter_weights(tmp_path / "full" / "last"), _adapter_weights(tmp_path / "split" / "last")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert not any(p.name.startswith(".") for p in (tmp_path / "split").iterdir())  # no temp folders left

    with pytest.raises(TrainConfigMismatchError, match=r"lr: 0\.005 -> 0\.001.*--force"):
        train(cfg_for(prepared, tmp_path / "split", max_steps=6, **{**kw, "lr": 1e-3}))
    restarted = train(cfg_for(prepared, tmp_path / "split", max_steps=1, force=True, **{**kw, "lr": 1e-3}))
    assert restarted["steps"] == 1 and [r["step"] for r in read_log(tmp_path / "split")] == [1]
    saved = json.loads((tmp_path / "split" / "last" / "train_config.json").read_text())
    assert saved["lr"] == 1e-3


def test_qlora_nf4_base_trains_a_step_on_cpu(prepared, tmp_path):
    s = train(cfg_for(prepared, tmp_path / "q", max_steps=1, use_quantization=True))
    assert s["steps"] == 1 and math.isfinite(s["final_loss"]) and s["model"]["quantization"]
    w = _adapter_weights(tmp_path / "q" / "best")
    assert any("lora_B" in k and w[k].abs().sum() > 0 for k in w)  # B starts at zero: the step moved it
