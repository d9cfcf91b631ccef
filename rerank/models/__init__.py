"""Scoring backends behind one interface (base.Backend); importing this package registers them."""
from rerank.models import llm  # noqa: F401  (registers "transformers")
from rerank.models import qwen3vl  # noqa: F401  (registers "qwen3vl")
from rerank.models import unsloth_backend  # noqa: F401  (registers "unsloth"; imports unsloth only in load())
