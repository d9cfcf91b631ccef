"""The Unsloth text backend on CPU (an optional extra: requirements-unsloth.txt, ``make venv-unsloth``).

Skipped with a reason when ``unsloth`` is not installed (the default CI venv leaves it out: importing it patches
transformers process-wide). The check runs in a subprocess for the same reason: Unsloth's patches must not
leak into the other tests of this process. Unsloth 2026.10.9 on CPU loads the model as transformers Qwen3 with
bitsandbytes 4-bit layers in bf16, so its scores are compared with our own NF4 bf16 backend's ranking.
"""
import json
import subprocess
import sys
import textwrap

import pytest

from rerank.models.select import unsloth_installed
from tiny_models import REPO_ROOT, tiny_qwen3_dir

pytestmark = pytest.mark.skipif(not unsloth_installed(),
                                reason="optional extra: unsloth not installed (make venv-unsloth)")

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from rerank.models.base import get_backend
    from rerank.prompts import LABELS, ItemView, PromptBuilder
    from rerank.verbalizer import resolve_label_ids
    model = sys.argv[1]
    uns = get_backend("unsloth")(model_name=model, device_name="cpu").load()
    ref = get_backend("transformers")(model_name=model, device_name="cpu", dtype_name="bfloat16",
                                      quantization="nf4").load()
    b = PromptBuilder(uns.tokenizer, max_prompt_tokens=4096)
    prompts = [b.build(f"u{u}", [ItemView(f"h{i}", f"Film {u * 7 + i}") for i in range(1 + u % 4)],
                       [ItemView(f"c{i}", f"Candidate {i}") for i in range(12)]) for u in range(4)]
    ids = resolve_label_ids(uns.tokenizer, LABELS, prompts[0].text)[:12]
    a, r = uns.last_logits(prompts)[:, ids].float(), ref.last_logits(prompts)[:, ids].float()
    print("RESULT " + json.dumps({"describe": uns.describe(), "max_abs": float((a - r).abs().max()),
                                  "finite": bool(torch.isfinite(a).all()), "shape": list(a.shape)}))
""")


def test_unsloth_backend_scores_like_transformers_nf4_on_cpu():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_qwen3_dir())], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert res["describe"]["backend"] == "unsloth" and res["describe"]["quantization"] == "unsloth-4bit"
    assert res["finite"] and res["shape"] == [4, 12]
    assert res["max_abs"] < 0.05, res  # same NF4 quantiser and bf16 compute; only kernel order differs
