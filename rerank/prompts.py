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
from dataclasses import dataclass, field, replace
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
    """What the prompt shows of one item: its title, an optional detail line, an optional image file."""

    item_id: str
    title: str
    detail: str = ""
    image: Optional[str] = None  # absolute path; shown only by VL prompts (raw_image mode)


@dataclass
class Prompt:
    """One rendered prompt, ready to tokenize (chat template applied, no special tokens to add)."""

    user_id: str
    text: str
    labels: list[str]
    candidates: list[str]  # item ids in label order
    n_tokens: int  # text tokens + the tokens the images expand to
    n_history: int  # history items kept after truncation
    truncation: dict = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # image files in prompt order (one placeholder each)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())  # one line: newlines/tabs inside titles would break the list layout
    if n <= 0:
        return ""
    return s if len(s) <= n else s[: max(n - 1, 0)].rstrip() + "…"


def _item_parts(prefix: str, item: ItemView, title_chars: int, detail_chars: int) -> list:
    """One list line as parts: text, with the image (if any) right after the label."""
    title = _clip(item.title, title_chars)
    detail = _clip(item.detail, detail_chars)
    tail = f" {title}" + (f" — {detail}" if detail else "")
    if item.image:
        return [f"{prefix} ", {"type": "image", "image": item.image}, tail]
    return [f"{prefix}{tail}"]


def render_messages(
    history: Sequence[ItemView],
    candidates: Sequence[ItemView],
    noun: str = "items",
    title_chars: int = 80,
    detail_chars: int = 200,
) -> list[dict]:
    """Chat messages for one user; labels follow the candidate order.

    The user content is a plain string, or, when any item carries an image, a list of text and image parts
    (the form VL chat templates and processors take).
    """
    if len(candidates) > len(LABELS):
        raise ValueError(f"{len(candidates)} candidates, but at most {len(LABELS)} labels (A-Z) are available")
    if not candidates:
        raise ValueError("no candidates to rank")
    parts: list = []
    if history:
        parts.append(f"The user interacted with these {noun}, oldest first:")
        for i, it in enumerate(history):
            parts += ["\n"] + _item_parts(f"{i + 1}.", it, title_chars, detail_chars)
    else:
        parts.append(f"The user has no earlier {noun} to show.")
    parts.append(f"\n\nCandidate {noun}:")
    for i, it in enumerate(candidates):
        parts += ["\n"] + _item_parts(f"{LABELS[i]}.", it, title_chars, detail_chars)
    last = LABELS[len(candidates) - 1]
    parts.append(f"\n\nWhich candidate will the user interact with next? Answer with a single letter (A-{last}) only.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _merge_parts(parts)}]


def _merge_parts(parts: list):
    """Join adjacent text parts; a string if there is no image."""
    out: list = []
    for p in parts:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        else:
            out.append(p)
    if len(out) == 1 and isinstance(out[0], str):
        return out[0]
    return [{"type": "text", "text": p} if isinstance(p, str) else p for p in out]


def message_images(messages: list[dict]) -> list[str]:
    return [p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"]
            if p.get("type") == "image"]


def apply_template(templater, messages: list[dict]) -> str:
    """The model's chat template with the assistant turn opened (thinking disabled where supported).

    ``templater`` is a tokenizer, or a VL processor (whose template turns image parts into placeholders).
    """
    if getattr(templater, "chat_template", None):
        from transformers import ProcessorMixin

        # enable_thinking is read by Qwen3's template; processors would pass it on to their __call__
        extra = {} if isinstance(templater, ProcessorMixin) else {"enable_thinking": False}
        return templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    if message_images(messages):
        raise ValueError("image prompts need a model with a chat template (a VL processor)")
    # Base models without a template: a plain layout ending in an answer cue.
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nAnswer:"


def limit_images(history: list[ItemView], candidates: list[ItemView], max_images: Optional[int]):
    """Keep at most ``max_images`` images: history images go first (oldest first), then candidate images
    from the last label backwards; the items themselves stay, as text."""
    if max_images is None:
        return history, candidates
    n_cand = sum(c.image is not None for c in candidates)
    hist_budget = max(0, max_images - n_cand)
    with_img = [i for i, h in enumerate(history) if h.image is not None]
    drop_hist = set(with_img[: max(0, len(with_img) - hist_budget)])  # oldest first
    history = [replace(h, image=None) if i in drop_hist else h for i, h in enumerate(history)]
    cand_img = [i for i, c in enumerate(candidates) if c.image is not None]
    drop_cand = set(cand_img[max_images:]) if n_cand > max_images else set()
    candidates = [replace(c, image=None) if i in drop_cand else c for i, c in enumerate(candidates)]
    return history, candidates


class PromptBuilder:
    """Builds budget-respecting prompts for one tokenizer.

    Args:
        tokenizer: the model's tokenizer (counts tokens).
        max_history: last N history items shown.
        max_prompt_tokens: token budget per prompt (image tokens included).
        title_chars / detail_chars: initial per-item text limits.
        noun: how items are called in the prompt ("movies", "items", ...).
        templater: what applies the chat template (default: the tokenizer; a VL processor for image prompts).
        image_tokens: tokens one image file expands to (VL only; each image is one placeholder in the text).
        max_images: images per prompt at most (history images dropped oldest-first before candidate images).
    """

    def __init__(
        self,
        tokenizer,
        max_history: int = 10,
        max_prompt_tokens: int = 2048,
        title_chars: int = 80,
        detail_chars: int = 200,
        noun: str = "items",
        templater=None,
        image_tokens: Optional[Callable[[str], int]] = None,
        max_images: Optional[int] = None,
    ):
        self.tokenizer = tokenizer
        self.max_history = max_history
        self.max_prompt_tokens = max_prompt_tokens
        self.title_chars = title_chars
        self.detail_chars = detail_chars
        self.noun = noun
        self.templater = templater if templater is not None else tokenizer
        self.image_tokens = image_tokens
        self.max_images = max_images

    def count_tokens(self, text: str, images: Sequence[str] = ()) -> int:
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if images:
            if self.image_tokens is None:
                raise ValueError("image prompts need image_tokens (a VL processor) to count their tokens")
            n += sum(self.image_tokens(p) - 1 for p in images)  # each placeholder expands to N tokens
        return n

    def render(self, history, candidates, title_chars, detail_chars) -> str:
        return apply_template(
            self.templater, render_messages(history, candidates, self.noun, title_chars, detail_chars)
        )

    def build(self, user_id: str, history: Sequence[ItemView], candidates: Sequence[ItemView]) -> Prompt:
        history = list(history)[-self.max_history :] if self.max_history > 0 else []
        history, candidates = limit_images(history, list(candidates), self.max_images)
        budget = self.max_prompt_tokens

        def attempt(hist, cands, t_chars, d_chars):
            messages = render_messages(hist, cands, self.noun, t_chars, d_chars)
            text = apply_template(self.templater, messages)
            images = message_images(messages)
            return text, self.count_tokens(text, images), images

        def done(text, n, images, hist, d_chars, t_chars, cands=candidates):
            return Prompt(user_id=user_id, text=text, labels=list(LABELS[: len(cands)]),
                          candidates=[c.item_id for c in cands], n_tokens=n, n_history=len(hist),
                          truncation={"detail_chars": d_chars, "title_chars": t_chars}, images=images)

        # 1. shorten details
        for frac in DETAIL_STEPS:
            d_chars = int(self.detail_chars * frac)
            text, n, imgs = attempt(history, candidates, self.title_chars, d_chars)
            if n <= budget:
                return done(text, n, imgs, history, d_chars, self.title_chars)
        # 2. drop oldest history (details already gone); binary search the longest tail that fits
        lo, hi = 0, len(history)  # invariant: keeping `lo` items may fit, keeping `hi` does not
        while lo < hi - 1:
            mid = (lo + hi) // 2
            if attempt(history[-mid:], candidates, self.title_chars, 0)[1] <= budget:
                lo = mid
            else:
                hi = mid
        kept = history[-lo:] if lo else []
        text, n, imgs = attempt(kept, candidates, self.title_chars, 0)
        if n <= budget:
            return done(text, n, imgs, kept, 0, self.title_chars)
        # 3. shorten titles, no history left
        for frac in TITLE_STEPS[1:]:
            t_chars = max(int(self.title_chars * frac), MIN_TITLE_CHARS)
            text, n, imgs = attempt([], candidates, t_chars, 0)
            if n <= budget:
                return done(text, n, imgs, [], 0, t_chars)
        # 4. drop candidate images from the last label backwards (the candidates stay, as text)
        cands = list(candidates)
        for i in reversed(range(len(cands))):
            if cands[i].image is None:
                continue
            cands[i] = replace(cands[i], image=None)
            text, n, imgs = attempt([], cands, t_chars, 0)
            if n <= budget:
                return done(text, n, imgs, [], 0, t_chars, cands)
        raise PromptTooLongError(
            f"user {user_id!r}: the prompt needs {n} tokens with all history dropped and titles cut to "
            f"{MIN_TITLE_CHARS} chars ({len(candidates)} candidates), over max_prompt_tokens={budget}; "
            f"raise --max_prompt_tokens or use fewer candidates"
        )


def item_views(
    items: Mapping[str, tuple[str, str]],
    ids: Sequence[str],
    on_missing_detail: Optional[Callable] = None,
    images: Optional[Mapping[str, str]] = None,
) -> list[ItemView]:
    """ItemViews for ids from a {item_id: (title, detail)} map; detail '' means title-only.

    With ``images`` (raw_image mode) an item's image is its detail: a missing image is the fallback counted.
    """
    out = []
    for i in ids:
        title, detail = items[i]
        image = images.get(i) if images is not None else None
        missing = (image is None) if images is not None else not detail
        if missing and on_missing_detail is not None:
            on_missing_detail(i)
        out.append(ItemView(i, title, detail or "", image))
    return out
