"""Turn (history, candidates, item texts) into a listwise chat prompt that fits a token budget.

The prompt lists the user's last N history items (oldest first) and the candidates labelled A, B, ...; it is
rendered with the model's chat template and ends where the model would write its answer, so the next-token
logits of the label tokens score the candidates (see ``rerank.verbalizer``).

Token budget (``max_prompt_tokens``) is met in this order, never touching the candidate list:
1. shorten the per-item detail text (description / summary), step by step down to nothing;
2. drop the oldest history items, one at a time;
3. shorten titles (history and candidates) down to ``MIN_TITLE_CHARS``.
If it still does not fit, ``PromptTooLongError`` names the user and the sizes.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

LABELS = tuple(string.ascii_uppercase)  # at most 26 candidates
MIN_TITLE_CHARS = 24
DETAIL_STEPS = (1.0, 0.5, 0.25, 0.0)  # fractions of max_text_chars tried in turn
TITLE_STEPS = (1.0, 0.5, 0.0)  # 0.0 -> MIN_TITLE_CHARS

DOMAIN_NOUNS = {"ml-100k": "movies", "beauty": "beauty products", "games": "video games"}

SYSTEM_PROMPT = (
    "You are a recommender system. Given a user's interaction history, you pick the item the user "
    "is most likely to interact with next."
)


class PromptTooLongError(ValueError):
    pass


@dataclass(frozen=True)
class ItemView:
    """What the prompt shows of one item: its title and an optional detail line."""

    item_id: str
    title: str
    detail: str = ""


@dataclass
class Prompt:
    """One rendered prompt, ready to tokenize (chat template applied, no special tokens to add)."""

    user_id: str
    text: str
    labels: list[str]
    candidates: list[str]  # item ids in label order
    n_tokens: int
    n_history: int  # history items kept after truncation
    truncation: dict = field(default_factory=dict)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())  # one line: newlines/tabs inside titles would break the list layout
    if n <= 0:
        return ""
    return s if len(s) <= n else s[: max(n - 1, 0)].rstrip() + "…"


def _line(prefix: str, item: ItemView, title_chars: int, detail_chars: int) -> str:
    title = _clip(item.title, title_chars)
    detail = _clip(item.detail, detail_chars)
    return f"{prefix} {title}" + (f" — {detail}" if detail else "")


def render_messages(
    history: Sequence[ItemView],
    candidates: Sequence[ItemView],
    noun: str = "items",
    title_chars: int = 80,
    detail_chars: int = 200,
) -> list[dict]:
    """Chat messages for one user; labels follow the candidate order."""
    if len(candidates) > len(LABELS):
        raise ValueError(f"{len(candidates)} candidates, but at most {len(LABELS)} labels (A-Z) are available")
    if not candidates:
        raise ValueError("no candidates to rank")
    lines = []
    if history:
        lines.append(f"The user interacted with these {noun}, oldest first:")
        lines += [_line(f"{i + 1}.", it, title_chars, detail_chars) for i, it in enumerate(history)]
    else:
        lines.append(f"The user has no earlier {noun} to show.")
    lines.append("")
    lines.append(f"Candidate {noun}:")
    lines += [_line(f"{LABELS[i]}.", it, title_chars, detail_chars) for i, it in enumerate(candidates)]
    lines.append("")
    last = LABELS[len(candidates) - 1]
    lines.append(
        f"Which candidate will the user interact with next? Answer with a single letter (A-{last}) only."
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


def apply_template(tokenizer, messages: list[dict]) -> str:
    """The model's chat template with the assistant turn opened (thinking disabled where supported)."""
    if getattr(tokenizer, "chat_template", None):
        # enable_thinking is read by Qwen3's template and ignored by templates that do not use it
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    # Base models without a template: a plain layout ending in an answer cue.
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nAnswer:"


class PromptBuilder:
    """Builds budget-respecting prompts for one tokenizer.

    Args:
        tokenizer: the model's tokenizer (its chat template is used).
        max_history: last N history items shown.
        max_prompt_tokens: token budget per prompt.
        title_chars / detail_chars: initial per-item text limits.
        noun: how items are called in the prompt ("movies", "items", ...).
    """

    def __init__(
        self,
        tokenizer,
        max_history: int = 10,
        max_prompt_tokens: int = 2048,
        title_chars: int = 80,
        detail_chars: int = 200,
        noun: str = "items",
    ):
        self.tokenizer = tokenizer
        self.max_history = max_history
        self.max_prompt_tokens = max_prompt_tokens
        self.title_chars = title_chars
        self.detail_chars = detail_chars
        self.noun = noun

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, history, candidates, title_chars, detail_chars) -> str:
        return apply_template(
            self.tokenizer, render_messages(history, candidates, self.noun, title_chars, detail_chars)
        )

    def build(self, user_id: str, history: Sequence[ItemView], candidates: Sequence[ItemView]) -> Prompt:
        history = list(history)[-self.max_history :] if self.max_history > 0 else []
        budget = self.max_prompt_tokens

        def attempt(hist, t_chars, d_chars):
            text = self.render(hist, candidates, t_chars, d_chars)
            return text, self.count_tokens(text)

        # 1. shorten details
        for frac in DETAIL_STEPS:
            d_chars = int(self.detail_chars * frac)
            text, n = attempt(history, self.title_chars, d_chars)
            if n <= budget:
                return self._prompt(user_id, text, candidates, n, len(history), d_chars, self.title_chars)
        # 2. drop oldest history (details already gone); binary search the longest tail that fits
        lo, hi = 0, len(history)  # invariant: keeping `lo` items may fit, keeping `hi` does not
        while lo < hi - 1:
            mid = (lo + hi) // 2
            if attempt(history[-mid:], self.title_chars, 0)[1] <= budget:
                lo = mid
            else:
                hi = mid
        kept = history[-lo:] if lo else []
        text, n = attempt(kept, self.title_chars, 0)
        if n <= budget:
            return self._prompt(user_id, text, candidates, n, len(kept), 0, self.title_chars)
        # 3. shorten titles, no history left
        for frac in TITLE_STEPS[1:]:
            t_chars = max(int(self.title_chars * frac), MIN_TITLE_CHARS)
            text, n = attempt([], t_chars, 0)
            if n <= budget:
                return self._prompt(user_id, text, candidates, n, 0, 0, t_chars)
        raise PromptTooLongError(
            f"user {user_id!r}: the prompt needs {n} tokens with all history dropped and titles cut to "
            f"{MIN_TITLE_CHARS} chars ({len(candidates)} candidates), over max_prompt_tokens={budget}; "
            f"raise --max_prompt_tokens or use fewer candidates"
        )

    def _prompt(self, user_id, text, candidates, n, n_hist, d_chars, t_chars) -> Prompt:
        return Prompt(
            user_id=user_id,
            text=text,
            labels=list(LABELS[: len(candidates)]),
            candidates=[c.item_id for c in candidates],
            n_tokens=n,
            n_history=n_hist,
            truncation={"detail_chars": d_chars, "title_chars": t_chars},
        )


def item_views(
    items: Mapping[str, tuple[str, str]], ids: Sequence[str], on_missing_detail: Optional[Callable] = None
) -> list[ItemView]:
    """ItemViews for ids from a {item_id: (title, detail)} map; detail '' means title-only."""
    out = []
    for i in ids:
        title, detail = items[i]
        if not detail and on_missing_detail is not None:
            on_missing_detail(i)
        out.append(ItemView(i, title, detail or ""))
    return out
