"""Stage 2: prompts, verbalizer scoring, model backends, the rerank pipeline."""
