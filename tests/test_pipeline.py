"""End to end: data_prepare.py -> run_rerank.py on real ML-100k with a tiny random Qwen3 (real tokenizer).

The run's outputs are checked against independent computations: metrics recomputed by hand from the
predictions, and each user's scores recomputed with a plain transformers forward of the dumped prompt.
"""
import json
import math

import pandas as pd
import pytest
import torch

import data_prepare
import run_rerank
from config import RerankConfig
from dataset.format import PreparedDataset
from rerank.item_text import SummaryMismatchError, write_summaries
from rerank.models.resolve import ModelNotFoundError
from rerank.pipeline import run
from tiny_models import tiny_qwen3_dir


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("prep") / "ml-100k"
    assert data_prepare.main(["--dataset", "ml-100k", "--data_root", str(ml100k_dir), "--retriever", "popularity",
                              "--output_dir", str(out)]) == 0
    return PreparedDataset(out)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_qwen3_dir()
    return str(path), AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def plain_scores(m, tok, prompt_text, n):
    """Independent reference: unpadded full forward, label letters' logits at the last position."""
    ids = tok(prompt_text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    letters = [tok.convert_tokens_to_ids(chr(65 + i)) for i in range(n)]
    with torch.no_grad():
        return m(input_ids=ids).logits[0, -1, letters].tolist()


def test_ml100k_end_to_end_outputs_match_independent_computation(ml100k, model, tmp_path, capsys):
    path, m, tok = model
    out = tmp_path / "run"
    assert run_rerank.main(["--data", str(ml100k.root), "--retriever", "popularity", "--model", path,
                            "--max_users", "6", "--llm_batch_size", "4", "--output_dir", str(out),
                            "--dump_prompts", str(tmp_path / "p.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "| reranker (overall) | 6 |" in printed

    pred = pd.read_parquet(out / "predictions.parquet")
    metrics = json.loads((out / "metrics.json").read_text())
    prompts = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert len(pred) == 6 == metrics["n_users"] and len(prompts) == 6
    cands = pd.read_parquet(ml100k.candidates_path("popularity", "test")).set_index("user_id")
    seqs = ml100k.sequences
    for row, p in zip(pred.itertuples(), prompts):
        assert row.target == seqs.at[row.user_id, "items"][-1]  # test target = last item
        assert list(row.candidates) == list(cands.at[row.user_id, "candidates"])  # retriever order kept
        assert p["user_id"] == row.user_id and p["labels"] == [chr(65 + i) for i in range(20)]
        assert list(row.scores) == pytest.approx(plain_scores(m, tok, p["prompt"], 20), abs=1e-4)
        titles = ml100k.items["title"]
        assert f"\nA. {titles[row.candidates[0]]}" in p["prompt"]
        assert titles[seqs.at[row.user_id, "items"][-2]] in p["prompt"]  # the most recent history item

    # retriever NDCG@10 recomputed by hand from the target positions
    ndcg = [1 / math.log2(list(c).index(t) + 2) if t in list(c)[:10] else 0.0
            for c, t in zip(pred["candidates"], pred["target"])]
    assert metrics["retriever"]["overall"]["ndcg@10"] == pytest.approx(sum(ndcg) / 6)
    assert metrics["n_subset"] == sum(t in list(c) for c, t in zip(pred["candidates"], pred["target"]))
    assert set(metrics["reranker"]["overall"]) >= {"ndcg@10", "recall@10", "mrr@10", "hit@10", "ndcg@20"}
    assert (out / "report.md").read_text().count("|") > 20


def test_permutations_average_scores_over_candidate_orders(ml100k, model, tmp_path):
    path, m, tok = model
    cfg = RerankConfig(data=str(ml100k.root), retriever="popularity", model=path, max_users=2, permutations=3,
                       output_dir=str(tmp_path / "run"), dump_prompts=str(tmp_path / "p.jsonl"))
    run(cfg)
    prompts = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert len(prompts) == 6 and prompts[0]["candidates"] != prompts[1]["candidates"]
    pred = pd.read_parquet(tmp_path / "run" / "predictions.parquet").set_index("user_id")
    for u in pred.index:
        acc = {}
        for p in (p for p in prompts if p["user_id"] == u):
            for item, s in zip(p["candidates"], plain_scores(m, tok, p["prompt"], len(p["candidates"]))):
                acc.setdefault(item, []).append(s)
        want = [sum(acc[i]) / 3 for i in pred.at[u, "candidates"]]
        assert list(pred.at[u, "scores"]) == pytest.approx(want, abs=1e-4)


def test_semantic_summary_small_shows_summaries_and_counts_fallbacks(ml100k, model, tmp_path):
    path, _, _ = model
    items = ml100k.items
    with_summary = list(items.index[::2])  # every other item has a summary
    write_summaries(ml100k, pd.DataFrame({"item_id": with_summary,
                                          "summary": [f"SUMMARY-OF-{i}" for i in with_summary]}))
    cfg = RerankConfig(data=str(ml100k.root), retriever="popularity", model=path, max_users=3,
                       mode="semantic_summary_small", output_dir=str(tmp_path / "run"),
                       dump_prompts=str(tmp_path / "p.jsonl"))
    metrics = run(cfg)
    prompts = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    shown = set()
    for p in prompts:
        for i in p["candidates"]:
            assert (f"SUMMARY-OF-{i}" in p["prompt"]) == (i in set(with_summary))
        shown |= set(p["candidates"])
        shown |= set(ml100k.sequences.at[p["user_id"], "items"][-11:-1])  # last 10 history items
    assert metrics["counts"]["title_only_fallback_items"] == len(shown - set(with_summary))


def test_summaries_from_another_dataset_are_refused(ml100k, model, tmp_path):
    table = ml100k.root / "summaries.parquet"
    pd.DataFrame({"item_id": ["1"], "summary": ["x"]}).to_parquet(table)  # no dataset hash stamp
    cfg = RerankConfig(data=str(ml100k.root), retriever="popularity", model=model[0], max_users=1,
                       mode="semantic_summary_small", output_dir=str(tmp_path / "run"))
    with pytest.raises(SummaryMismatchError, match="another dataset"):
        run(cfg)


def test_external_candidates_file_and_more_than_26_candidates(ml100k, model, tmp_path):
    users = list(ml100k.sequences.index[:2])
    all_items = list(ml100k.items.index)
    f = tmp_path / "c.csv"
    pd.DataFrame({"user_id": users, "candidates": [" ".join(all_items[:5]), " ".join(all_items[5:10])]}).to_csv(f, index=False)
    metrics = run(RerankConfig(data=str(ml100k.root), candidates=str(f), model=model[0],
                               output_dir=str(tmp_path / "run")))
    pred = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert metrics["n_users"] == len(ml100k.sequences)  # every user of the split is evaluated...
    assert metrics["counts"]["users_without_candidates"] == len(ml100k.sequences) - 2  # ...most as misses
    assert list(pred.set_index("user_id").at[users[1], "candidates"]) == all_items[5:10]

    pd.DataFrame({"user_id": users[:1], "candidates": [" ".join(all_items[:27])]}).to_csv(f, index=False)
    with pytest.raises(ValueError, match="more than 26 candidates"):
        run(RerankConfig(data=str(ml100k.root), candidates=str(f), model=model[0], output_dir=str(tmp_path / "r2")))


def test_model_folder_without_tokenizer_is_a_clear_error(ml100k, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_qwen3_dir() / "config.json", bare / "config.json")
    with pytest.raises(ModelNotFoundError, match="has no tokenizer"):
        run(RerankConfig(data=str(ml100k.root), retriever="popularity", model=str(bare), max_users=1))
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        run(RerankConfig(data=str(ml100k.root), retriever="popularity", model="./nope", max_users=1))
