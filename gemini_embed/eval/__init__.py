"""MTEB-style evaluation of an encoder over local benchmark data.

    from gemini_embed import eval as ge_eval
    results = ge_eval.evaluate(embedder.embed, "quick")       # or ["STSBenchmark", "SciFact"], "sts", ...
    print(ge_eval.format_table(results))

Also here: an on-disk embedding cache (`cache.py`), a streamed, sharded exact top-k (`search.py`)
and an mteb adapter (`mteb_adapter.py`, imported on its own: it needs mteb).
"""
from gemini_embed.eval.cache import EmbeddingCache, model_fingerprint
from gemini_embed.eval.evaluators import EVALUATORS, undersample
from gemini_embed.eval.readers import DataFormatError
from gemini_embed.eval.report import family_means, format_table
from gemini_embed.eval.runner import evaluate, evaluate_task, truncated
from gemini_embed.eval.search import top_k
from gemini_embed.eval.tasks import (
    FAMILIES,
    GROUPS,
    REGISTRY,
    Task,
    custom_task,
    data_root,
    list_tasks,
    load_task_data,
    resolve_tasks,
)

__all__ = [
    "EVALUATORS", "FAMILIES", "GROUPS", "REGISTRY", "DataFormatError", "EmbeddingCache", "Task", "custom_task",
    "data_root", "evaluate", "evaluate_task", "family_means", "format_table", "list_tasks", "load_task_data",
    "model_fingerprint", "resolve_tasks", "top_k", "truncated", "undersample",
]
