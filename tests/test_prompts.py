"""Prompt building on the REAL Qwen3 tokenizer: labels, layout, and the token budget."""
import pytest

from rerank.prompts import LABELS, ItemView, PromptBuilder, PromptTooLongError, render_messages
from tiny_models import qwen3_tokenizer


@pytest.fixture(scope="module")
def tok():
    return qwen3_tokenizer()


def views(prefix, n, title_words=3, detail_words=20):
    return [ItemView(f"{prefix}{i}", f"{prefix} title {i} " + "word " * title_words,
                     "detail " * detail_words) for i in range(n)]


def test_prompt_lists_history_oldest_first_and_labels_candidates(tok):
    b = PromptBuilder(tok, max_history=3)
    hist = [ItemView("h1", "Old Movie"), ItemView("h2", "Mid Movie"), ItemView("h3", "New Movie"),
            ItemView("h4", "Newest Movie")]
    cands = [ItemView("c1", "Cand One"), ItemView("c2", "Cand Two")]
    p = b.build("u", hist, cands)
    assert "Old Movie" not in p.text  # only the last 3 history items
    assert p.text.index("Mid Movie") < p.text.index("New Movie") < p.text.index("Newest Movie")
    assert "A. Cand One" in p.text and "B. Cand Two" in p.text
    assert p.labels == ["A", "B"] and p.candidates == ["c1", "c2"]
    assert p.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # Qwen3, thinking off
    assert p.n_tokens == len(tok(p.text, add_special_tokens=False)["input_ids"])


def test_more_than_26_candidates_is_an_error():
    with pytest.raises(ValueError, match="at most 26"):
        render_messages([], [ItemView(str(i), "t") for i in range(27)])


@pytest.mark.parametrize("budget", [300, 350, 500, 800])
def test_budget_met_without_ever_dropping_a_candidate(tok, budget):
    b = PromptBuilder(tok, max_history=10, max_prompt_tokens=budget)
    cands = views("c", 20, detail_words=10)
    p = b.build("u", views("h", 10, detail_words=40), cands)
    assert p.n_tokens <= budget
    assert p.candidates == [c.item_id for c in cands]
    for i, c in enumerate(cands):
        assert f"\n{LABELS[i]}. c title {i}" in p.text


def test_budget_shortens_details_before_dropping_history(tok):
    hist, cands = views("h", 5, detail_words=30), views("c", 5, detail_words=30)
    full = PromptBuilder(tok, max_prompt_tokens=100_000).build("u", hist, cands)
    p = PromptBuilder(tok, max_prompt_tokens=full.n_tokens - 50).build("u", hist, cands)
    assert p.n_history == 5 and p.truncation["detail_chars"] < 200


def test_oldest_history_dropped_first(tok):
    hist, cands = views("h", 10, detail_words=0), views("c", 3, detail_words=0)
    none = PromptBuilder(tok, max_prompt_tokens=100_000).build("u", [], cands)
    p = PromptBuilder(tok, max_prompt_tokens=none.n_tokens + 40).build("u", hist, cands)
    assert 0 < p.n_history < 10
    kept = [h for h in hist if h.title.strip() in p.text]
    assert [h.item_id for h in kept] == [h.item_id for h in hist[-p.n_history:]]


def test_prompt_that_cannot_fit_names_the_user(tok):
    with pytest.raises(PromptTooLongError, match="user 'u7'"):
        PromptBuilder(tok, max_prompt_tokens=120).build("u7", views("h", 3), views("c", 20, title_words=20))
