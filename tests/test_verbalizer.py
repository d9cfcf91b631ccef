"""Verbalizer scoring on a tiny random Qwen3 (real architecture + real tokenizer).

Scores are compared with an independent computation: a plain transformers forward of each prompt alone,
unpadded, full logits, reading the label columns at the last position.
"""
import random

import pytest
import torch

from rerank.batching import score_prompts
from rerank.models.llm import TransformersTextBackend
from rerank.prompts import LABELS, ItemView, PromptBuilder
from rerank.verbalizer import LabelTokenError, resolve_label_ids
from tiny_models import qwen3_tokenizer, tiny_qwen3_dir


@pytest.fixture(scope="module")
def backend():
    return TransformersTextBackend(model_name=str(tiny_qwen3_dir())).load()


@pytest.fixture(scope="module")
def prompts(backend):
    rng = random.Random(0)
    b = PromptBuilder(backend.tokenizer, max_prompt_tokens=4096)
    out = []
    for u in range(9):  # varied lengths so batches need real padding
        hist = [ItemView(f"h{i}", "Film " + "x" * rng.randint(1, 40), "d " * rng.randint(0, 15))
                for i in range(rng.randint(1, 10))]
        cands = [ItemView(f"c{i}", f"Candidate {i}") for i in range(rng.randint(2, 20))]
        out.append(b.build(f"u{u}", hist, cands))
    return out


@pytest.fixture(scope="module")
def label_ids(backend):
    b = PromptBuilder(backend.tokenizer)
    return resolve_label_ids(backend.tokenizer, LABELS, b.render([], [ItemView("x", "x")] * 26, 10, 0))


def test_label_ids_are_the_bare_letter_tokens_on_qwen3(label_ids):
    tok = qwen3_tokenizer()
    assert label_ids == [tok.convert_tokens_to_ids(c) for c in LABELS]


def test_label_check_fires_when_the_prompt_end_merges_with_the_label():
    tok = qwen3_tokenizer()
    with pytest.raises(LabelTokenError, match="merges with the end of the prompt"):
        resolve_label_ids(tok, ["A", "B"], "Question? Answer: ")  # the model would write ' A'


def test_label_check_fires_on_a_tokenizer_without_single_letter_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "answer": 1, "a": 2, "b": 3}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    with pytest.raises(LabelTokenError, match="not the label itself"):
        resolve_label_ids(tok, ["A", "B"], "answer ")


def test_label_check_fires_on_multi_token_labels():
    with pytest.raises(LabelTokenError, match="tokens"):
        resolve_label_ids(qwen3_tokenizer(), ["A", "Zyzzogeton"], "\n")


def reference_scores(backend, prompt, label_ids):
    """Independent path: one prompt, no padding, full logits, plain model call."""
    ids = backend.tokenizer(prompt.text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = backend.model(input_ids=ids).logits  # (1, T, V)
    return logits[0, -1, label_ids[: len(prompt.candidates)]].tolist()


def test_batched_scores_equal_plain_unpadded_forward(backend, prompts, label_ids):
    batched = score_prompts(backend, prompts, label_ids, batch_size=4, progress=False)
    assert len({p.n_tokens for p in prompts}) > 3
    for p, got in zip(prompts, batched):
        assert got == pytest.approx(reference_scores(backend, p, label_ids), abs=1e-4)


def test_batched_equals_one_at_a_time(backend, prompts, label_ids):
    batched = score_prompts(backend, prompts, label_ids, batch_size=9, progress=False)
    single = [score_prompts(backend, [p], label_ids, batch_size=1, progress=False)[0] for p in prompts]
    for a, b in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-5)


class MemoryLimited:
    """Wraps a real backend; batches above ``limit`` raise OOM, as a small GPU would."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.sizes = inner, limit, []
        self.tokenizer = inner.tokenizer

    def prefetch(self, prompts):
        self.inner.prefetch(prompts)

    def last_logits(self, prompts):
        self.sizes.append(len(prompts))
        if len(prompts) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.last_logits(prompts)


def test_oom_halves_the_batch_and_loses_no_user(backend, prompts, label_ids):
    limited = MemoryLimited(backend, limit=2)
    got = score_prompts(limited, prompts, label_ids, batch_size=8, progress=False)
    want = score_prompts(backend, prompts, label_ids, batch_size=1, progress=False)
    assert all(g == pytest.approx(w, abs=1e-5) for g, w in zip(got, want))
    assert limited.sizes[:3] == [8, 4, 2]
    assert sum(s for s in limited.sizes if s <= 2) == len(prompts)  # each prompt scored exactly once


def test_non_oom_errors_propagate(backend, prompts, label_ids):
    class Broken(MemoryLimited):
        def last_logits(self, prompts):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        score_prompts(Broken(backend, 1), prompts, label_ids, progress=False)


def test_nf4_backend_loads_and_scores(prompts, label_ids):
    nf4 = TransformersTextBackend(model_name=str(tiny_qwen3_dir()), use_quantization=True).load()
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in nf4.model.modules())
    got = score_prompts(nf4, prompts[:3], label_ids, batch_size=3, progress=False)
    assert all(len(s) == len(p.candidates) and all(map(lambda v: v == v, s)) for s, p in zip(got, prompts))
