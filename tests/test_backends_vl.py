"""Qwen3-VL backend speed paths on a tiny random Qwen3-VL (real processor files) with real posters:
prefetching the next batch's images on a worker thread changes nothing, and the label-rows head equals the
model's full head."""
import pytest
import torch

from rerank.models.qwen3vl import Qwen3VLBackend
from rerank.prompts import LABELS, ItemView, PromptBuilder
from rerank.verbalizer import resolve_label_ids
from tiny_models import shared_path, tiny_qwen3vl_dir


@pytest.fixture(scope="module")
def backend():
    return Qwen3VLBackend(model_name=str(tiny_qwen3vl_dir())).load()


@pytest.fixture(scope="module")
def batches(backend):
    posters = [str(p) for p in sorted(shared_path("data", "ml-1m-posters", "MovieImages").glob("*.jpg"))[:8]]
    b = PromptBuilder(backend.tokenizer, max_history=5, max_prompt_tokens=8192, noun="movies",
                      templater=backend.processor, image_tokens=backend.image_tokens)
    prompts = []
    for u, (n_hist, n_cand) in enumerate([(2, 3), (1, 2), (3, 2), (1, 3)]):
        hist = [ItemView(f"h{i}", f"History film {i}", image=posters[(u + i) % 8]) for i in range(n_hist)]
        cands = [ItemView(f"c{i}", f"Candidate film {i}", image=posters[(u + 4 + i) % 8] if i != 1 else None)
                 for i in range(n_cand)]
        prompts.append(b.build(f"u{u}", hist, cands))
    return [prompts[:2], prompts[2:]]


@pytest.fixture(scope="module")
def label_ids(backend, batches):
    return resolve_label_ids(backend.tokenizer, LABELS, batches[0][0].text)


def test_prefetching_the_next_batch_gives_identical_scores(backend, batches, label_ids):
    plain = [backend.last_logits(b)[:, label_ids] for b in batches]
    prefetched = []
    backend.prefetch(batches[0])
    for k, b in enumerate(batches):
        if k + 1 < len(batches):
            backend.prefetch(batches[k + 1])  # overlaps this batch's forward
        prefetched.append(backend.last_logits(b)[:, label_ids])
    for a, c in zip(plain, prefetched):
        assert torch.equal(a, c)


def test_a_stale_prefetch_hint_is_ignored(backend, batches, label_ids):
    backend.prefetch(batches[1])
    got = backend.last_logits(batches[0])[:, label_ids]  # the hint was for other prompts
    assert torch.equal(got, backend.last_logits(batches[0])[:, label_ids])


def test_vl_label_rows_head_equals_full_head(backend, batches, label_ids):
    full = Qwen3VLBackend(model_name=str(tiny_qwen3vl_dir()), label_head=False).load()
    assert backend.describe()["label_head"] == "label-rows" and full.describe()["label_head"] == "full"
    for b in batches:
        torch.testing.assert_close(backend.last_logits(b)[:, label_ids], full.last_logits(b)[:, label_ids],
                                   atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile check runs on the GPU (minutes to compile on 2 CPU cores)")
def test_vl_torch_compile_gives_the_same_scores(batches, label_ids):
    kw = dict(model_name=str(tiny_qwen3vl_dir()), device_name="cuda", dtype_name="float32")
    plain = Qwen3VLBackend(**kw).load()
    comp = Qwen3VLBackend(**kw, use_torch_compile=True).load()
    assert comp.describe()["torch_compile"] == "default"
    for b in batches:
        torch.testing.assert_close(comp.last_logits(b)[:, label_ids], plain.last_logits(b)[:, label_ids],
                                   atol=1e-3, rtol=0)
