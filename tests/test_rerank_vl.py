"""Qwen3-VL reranking on a tiny random Qwen3-VL (real config shrunk, REAL processor/tokenizer files) with real
movie posters: image blocks in prompts, image token counts, and scores against a plain unbatched forward."""
import pytest
import torch

from rerank.batching import score_prompts
from rerank.models.qwen3vl import Qwen3VLBackend, open_rgb
from rerank.prompts import LABELS, ItemView, PromptBuilder, limit_images
from rerank.verbalizer import resolve_label_ids
from tiny_models import shared_path, tiny_qwen3vl_dir

IMAGE_PAD = "<|image_pad|>"


@pytest.fixture(scope="module")
def backend():
    return Qwen3VLBackend(model_name=str(tiny_qwen3vl_dir()), use_quantization=False).load()


@pytest.fixture(scope="module")
def posters():
    folder = shared_path("data", "ml-1m-posters", "MovieImages")
    return [str(p) for p in sorted(folder.glob("*.jpg"))[:12]]


@pytest.fixture(scope="module")
def builder(backend):
    return PromptBuilder(backend.tokenizer, max_history=5, max_prompt_tokens=8192, noun="movies",
                         templater=backend.processor, image_tokens=backend.image_tokens)


@pytest.fixture(scope="module")
def label_ids(backend, builder):
    return resolve_label_ids(backend.tokenizer, LABELS, builder.render([], [ItemView("x", "x")] * 26, 10, 0))


def make_prompts(builder, posters):
    """Three users; some items without an image; different image counts so batches pad differently."""
    out = []
    for u, (n_hist, n_cand) in enumerate([(3, 4), (1, 2), (4, 5)]):
        hist = [ItemView(f"h{i}", f"History film {i}", image=posters[i] if i % 2 == 0 else None)
                for i in range(n_hist)]
        cands = [ItemView(f"c{i}", f"Candidate film {i}", image=posters[6 + i] if i != 1 else None)
                 for i in range(n_cand)]
        out.append((hist, cands, builder.build(f"u{u}", hist, cands)))
    return out


def test_one_image_block_per_item_with_an_image_and_token_counts_match(backend, builder, posters):
    for hist, cands, p in make_prompts(builder, posters):
        want = [v.image for v in hist + cands if v.image]
        assert p.images == want
        assert p.text.count("<|vision_start|>" + IMAGE_PAD + "<|vision_end|>") == len(want)
        enc = backend.processor(text=[p.text], images=[open_rgb(x) for x in want], return_tensors="pt")
        pad_id = backend.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        n_pad = int((enc["input_ids"] == pad_id).sum())
        merge = backend.processor.image_processor.merge_size
        assert n_pad == int(enc["image_grid_thw"].prod(-1).sum()) // merge**2
        assert p.n_tokens == enc["input_ids"].shape[1]  # the budget counted what the model will see


def test_label_ids_are_single_letter_tokens(backend, label_ids):
    assert [backend.tokenizer.decode([i]) for i in label_ids] == list(LABELS)


def test_vl_batched_scores_equal_plain_unbatched_forward(backend, builder, posters, label_ids):
    prompts = [p for _, _, p in make_prompts(builder, posters)]
    batched = score_prompts(backend, prompts, label_ids, batch_size=3, progress=False)
    for p, got in zip(prompts, batched):
        enc = backend.processor(text=[p.text], images=[open_rgb(x) for x in p.images], return_tensors="pt")
        with torch.no_grad():
            logits = backend.model(**enc).logits  # (1, T, V), no padding, full logits
        want = logits[0, -1, label_ids[: len(p.candidates)]].tolist()
        assert got == pytest.approx(want, abs=1e-4)


def test_max_images_drops_history_images_oldest_first_before_candidate_images(posters):
    hist = [ItemView(f"h{i}", f"H{i}", image=posters[i]) for i in range(4)]
    cands = [ItemView(f"c{i}", f"C{i}", image=posters[6 + i]) for i in range(3)]
    h, c = limit_images(hist, cands, max_images=5)
    assert [x.image is not None for x in h] == [False, False, True, True]  # 3 candidate + 2 newest history
    assert all(x.image for x in c)
    h, c = limit_images(hist, cands, max_images=2)
    assert not any(x.image for x in h) and [x.image is not None for x in c] == [True, True, False]
    assert [x.item_id for x in h + c] == [x.item_id for x in hist + cands]  # the items themselves stay
