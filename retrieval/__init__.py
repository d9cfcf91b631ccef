"""Stage-1 candidate generation: popularity and SASRec retrievers, faiss top-K, external candidate files.

Public API::

    build_candidates(prepared, cfg) -> dict      # writes candidates_{val,test}.parquet + retrieval.json
    read_candidates(path, prepared, split) -> pandas.DataFrame[user_id, candidates, scores]
"""
from retrieval.build import build_candidates
from retrieval.candidates_file import read_candidates

__all__ = ["build_candidates", "read_candidates"]
