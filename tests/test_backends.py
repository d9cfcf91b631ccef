"""Text backends on a tiny random Qwen3 (real architecture, real tokenizer): selection and fallbacks, the
label-rows head against a plain transformers forward, and fp32 / bf16 / NF4 / int8 agreeing on the ranking.

Why the agreement test looks the way it does: a tiny random model has small label-logit gaps (std ~0.14), and
scaling the LM-head label rows would scale the quantisation error of the hidden state by the same factor, so
order agreement would not improve. Instead each lower-precision backend gets an absolute score tolerance
(measured on this model: max |Δ| bf16 0.0023, int8 0.0027, NF4 0.033; tolerances ~3x that), and the test
asserts (a) every score is within it, (b) every candidate pair whose fp32 gap exceeds 2 x tolerance keeps its
order (pairs closer than that may legitimately swap), (c) mean Kendall tau over the prompts >= a floor.
"""
import logging
import random

import pytest
import torch

from config import RerankConfig
from rerank.models.accel import FLASH_MISSING_NOTICE, attention_implementation
from rerank.models.base import BackendUnavailableError, get_backend, register_backend
from rerank.models.llm import TransformersTextBackend
from rerank.models.select import choose_backend, unsloth_installed
from rerank.pipeline import load_backend
from rerank.prompts import LABELS, ItemView, PromptBuilder
from rerank.verbalizer import resolve_label_ids
from tiny_models import tiny_qwen3_dir

CPU = torch.device("cpu")
# backend kwargs -> (max abs score difference vs fp32, min mean Kendall tau)
TOLERANCES = {
    "bf16": ({"dtype_name": "bfloat16"}, 0.01, 0.97),
    "int8": ({"quantization": "int8"}, 0.01, 0.97),
    "nf4": ({"quantization": "nf4"}, 0.1, 0.9),
}


@pytest.fixture(scope="module")
def fp32():
    return TransformersTextBackend(model_name=str(tiny_qwen3_dir())).load()


@pytest.fixture(scope="module")
def prompts(fp32):
    rng = random.Random(1)
    b = PromptBuilder(fp32.tokenizer, max_prompt_tokens=4096)
    return [b.build(f"u{u}", [ItemView(f"h{i}", "Film " + "x" * rng.randint(1, 40), "d " * rng.randint(0, 9))
                              for i in range(rng.randint(1, 8))],
                    [ItemView(f"c{i}", f"Candidate {i}") for i in range(20)]) for u in range(8)]


@pytest.fixture(scope="module")
def label_ids(fp32):
    b = PromptBuilder(fp32.tokenizer)
    return resolve_label_ids(fp32.tokenizer, LABELS, b.render([], [ItemView("x", "x")] * 26, 10, 0))


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> float:
    """Kendall tau-a of two score vectors (L,), written out: mean sign agreement over ordered pairs."""
    da = torch.sign(a[:, None] - a[None, :])
    db = torch.sign(b[:, None] - b[None, :])
    n = a.numel()
    return float((da * db).sum() / (n * (n - 1)))


def test_auto_is_transformers_on_cpu():
    assert choose_backend("auto", vision=False, device=CPU) == "transformers"
    assert choose_backend("auto", vision=True, device=CPU) == "transformers"


def test_unknown_backend_name_lists_the_choices():
    with pytest.raises(ValueError, match="available"):
        choose_backend("vllm", vision=False, device=CPU)
    with pytest.raises(ValueError, match="unknown backend"):
        RerankConfig(backend="vllm")
    with pytest.raises(KeyError, match="available"):
        get_backend("vllm")


def test_registering_a_backend_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_backend("transformers", TransformersTextBackend)


def test_unsloth_requested_but_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("rerank.models.select.unsloth_installed", lambda: False)
    with pytest.raises(BackendUnavailableError, match="not installed.*requirements-unsloth"):
        choose_backend("unsloth", vision=False, device=CPU)
    with pytest.raises(BackendUnavailableError, match="not installed"):
        load_backend(RerankConfig(backend="unsloth", model=str(tiny_qwen3_dir()), device="cpu"))


def test_unsloth_for_a_vision_model_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("rerank.models.select.unsloth_installed", lambda: True)
    with pytest.raises(BackendUnavailableError, match="vision model needs a CUDA GPU"):
        choose_backend("unsloth", vision=True, device=CPU)


def test_flash_attention_missing_falls_back_to_sdpa_with_one_notice(caplog, monkeypatch):
    monkeypatch.setattr("rerank.models.accel._notices", set())
    with caplog.at_level(logging.WARNING, logger="rerank.models.accel"):
        be = TransformersTextBackend(model_name=str(tiny_qwen3_dir()), use_flash_attention=True).load()
        assert attention_implementation(True, CPU) == "sdpa"  # asked again: no second notice
    assert be.model.config._attn_implementation == "sdpa"
    assert [r.getMessage() for r in caplog.records].count(FLASH_MISSING_NOTICE) == 1


def test_pipeline_passes_quantization_and_backend_flags():
    be = load_backend(RerankConfig(model=str(tiny_qwen3_dir()), device="cpu", quantization="int8"))
    import bitsandbytes as bnb

    assert be.name == "transformers" and be.describe()["quantization"] == "int8"
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in be.model.modules())
    assert be.describe()["label_head"] == "label-rows"


def test_label_rows_head_equals_plain_full_forward(fp32, prompts, label_ids):
    got = fp32.last_logits(prompts)  # (B, V) batched, left-padded, label rows only
    assert torch.isnan(got[:, 0]).all() and not torch.isnan(got[:, label_ids]).any()
    for b, p in enumerate(prompts):
        ids = fp32.tokenizer(p.text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = fp32.model(input_ids=ids).logits[0, -1, label_ids]  # unpadded, full head
        torch.testing.assert_close(got[b, label_ids], want, atol=1e-4, rtol=0)


def test_label_rows_head_equals_full_head_path(fp32, prompts, label_ids):
    full = TransformersTextBackend(model_name=str(tiny_qwen3_dir()), label_head=False).load()
    assert full.describe()["label_head"] == "full"
    torch.testing.assert_close(fp32.last_logits(prompts)[:, label_ids],
                               full.last_logits(prompts)[:, label_ids], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(TOLERANCES))
def test_low_precision_backends_keep_the_ranking(kind, fp32, prompts, label_ids):
    kwargs, tol, min_tau = TOLERANCES[kind]
    ref = fp32.last_logits(prompts)[:, label_ids].float()  # (B, L)
    got = TransformersTextBackend(model_name=str(tiny_qwen3_dir()), **kwargs).load().last_logits(prompts)
    got = got[:, label_ids].float()  # (B, L)
    assert (got - ref).abs().max() <= tol
    gap = ref[:, :, None] - ref[:, None, :]  # (B, L, L) fp32 pair gaps
    clear = gap.abs() > 2 * tol
    assert clear.any()
    assert (torch.sign(gap) == torch.sign(got[:, :, None] - got[:, None, :]))[clear].all()
    taus = [kendall_tau(g, r) for g, r in zip(got, ref)]
    assert sum(taus) / len(taus) >= min_tau, taus


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile check runs on the GPU (55 s to compile on 2 CPU cores)")
def test_torch_compile_gives_the_same_scores(prompts, label_ids):
    kw = dict(model_name=str(tiny_qwen3_dir()), device_name="cuda", dtype_name="float32")
    plain = TransformersTextBackend(**kw).load()
    comp = TransformersTextBackend(**kw, use_torch_compile=True, pad_to_multiple_of=64).load()
    for chunk in (prompts[:4], prompts[4:]):
        torch.testing.assert_close(comp.last_logits(chunk)[:, label_ids], plain.last_logits(chunk)[:, label_ids],
                                   atol=1e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_picks_unsloth_on_cuda_when_installed():
    assert choose_backend("auto", vision=False, device=torch.device("cuda")) == (
        "unsloth" if unsloth_installed() else "transformers")


def test_adapters_never_go_to_unsloth(monkeypatch):
    """Only the transformers backend applies --adapter: auto avoids Unsloth, an explicit request is refused."""
    monkeypatch.setattr("rerank.models.select.unsloth_installed", lambda: True)
    cuda = torch.device("cuda")
    assert choose_backend("auto", vision=False, device=cuda) == "unsloth"
    assert choose_backend("auto", vision=False, device=cuda, adapter=True) == "transformers"
    with pytest.raises(BackendUnavailableError, match="--adapter is applied by the transformers backend"):
        choose_backend("unsloth", vision=False, device=cuda, adapter=True)
