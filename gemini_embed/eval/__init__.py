"""MTEB-style evaluation of an encoder over local benchmark data.

    from gemini_embed import eval as ge_eval
    results = ge_eval.evaluate(embedder.encode, "quick")      # or ["STSBenchmark", "SciFact"], "sts", ...
    print(ge_eval.format_table(results))
"""
from gemini_embed.eval.evaluators import EVALUATORS, undersample
from gemini_embed.eval.readers import DataFormatError
from gemini_embed.eval.runner import evaluate, evaluate_task, family_means, format_table, truncated
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
    "EVALUATORS", "FAMILIES", "GROUPS", "REGISTRY", "DataFormatError", "Task", "custom_task", "data_root",
    "evaluate", "evaluate_task", "family_means", "format_table", "list_tasks", "load_task_data",
    "resolve_tasks", "top_k", "truncated", "undersample",
]
