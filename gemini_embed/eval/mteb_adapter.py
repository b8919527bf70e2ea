"""Run our models inside mteb: an object implementing mteb's encoder protocol around an Embedder.

    import mteb
    from gemini_embed.eval.mteb_adapter import MtebEncoder
    model = MtebEncoder(ge.Embedder.from_pretrained("gemma3-270m"))
    mteb.evaluate(model, mteb.get_tasks(["STSBenchmark"]), cache=None)

mteb (>= 2.26, the `reference` extra) is imported by this module only. Offline, set
HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 and give mteb tasks whose `load_data` reads local
files (the hub copies of its own tasks cannot be downloaded).

Prompts: mteb says what it encodes with `task_metadata` (task name and type) and `prompt_type`
(query, document or None). A task of our registry with the same name gets its registered
prompts, so mteb encodes exactly what our own evaluator encodes; any other task gets one by
its mteb type (`TYPE_PROMPTS`). Documents use the `title: ... | text: ...` prompt with
the title mteb keeps apart. Models trained without prompts (all-MiniLM-L6-v2) get the text
mteb built: a document is `(title + " " + text).strip()`, as our evaluator builds it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from gemini_embed.eval import tasks as tasks_lib

# mteb task type -> our query-side task prompt (symmetric tasks use it for both sides)
TYPE_PROMPTS: dict[str, str] = {
    "STS": tasks_lib.SENTENCE_SIMILARITY,
    "PairClassification": tasks_lib.SENTENCE_SIMILARITY,
    "BitextMining": tasks_lib.SENTENCE_SIMILARITY,
    "Classification": tasks_lib.CLASSIFICATION,
    "MultilabelClassification": tasks_lib.CLASSIFICATION,
    "Clustering": tasks_lib.CLUSTERING,
    "Retrieval": tasks_lib.SEARCH_RESULT,
    "Reranking": tasks_lib.SEARCH_RESULT,
    "InstructionRetrieval": tasks_lib.SEARCH_RESULT,
    "InstructionReranking": tasks_lib.SEARCH_RESULT,
    "Summarization": tasks_lib.SUMMARIZATION,
}


def prompt_for(task_name: str, task_type: str, prompt_type: PromptType | str | None) -> str:
    """Our Embedder task (prompt) for an mteb task name, type and prompt type."""
    kind = None if prompt_type is None else PromptType(prompt_type)
    task = tasks_lib.REGISTRY.get(task_name)
    if task is not None:
        if kind is PromptType.document:
            return task.document_task or task.query_task
        return task.query_task
    if kind is PromptType.document:
        return tasks_lib.DOCUMENT
    if task_type not in TYPE_PROMPTS:
        raise ValueError(f"mteb task {task_name!r} has type {task_type!r}, which has no prompt mapping; "
                         f"known types: {sorted(TYPE_PROMPTS)}")
    return TYPE_PROMPTS[task_type]


class MtebEncoder(AbsEncoder):
    """mteb's EncoderProtocol around an Embedder (or anything with its `embed` signature).

    Args:
      embedder: the model; needs `embed(texts, task=, titles=, dim=, batch_size=)`, `uses_prompts`,
        `name` and `dim`.
      dim: a Matryoshka prefix to evaluate (default: the full embedding).
      batch_size: rows per jitted call.
      name: the model name mteb records ("org/name"; default "gemini_embed/<embedder.name>").
    """

    def __init__(self, embedder, *, dim: int | None = None, batch_size: int = 64, name: str | None = None):
        if dim is not None and not 1 <= dim <= embedder.dim:
            raise ValueError(f"dim={dim} is outside the model's range 1..{embedder.dim}")
        self.model = embedder
        self.dim = dim or embedder.dim
        self.batch_size = batch_size
        self.calls: list[tuple[str, str | None, int]] = []  # (mteb task, our prompt, texts): for tests and logs
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name or f"gemini_embed/{embedder.name}",
            "revision": "local",
            "embed_dim": self.dim,
            "max_tokens": getattr(embedder, "max_length", None),
            "similarity_fn_name": ScoringFunction.COSINE,  # model_copy skips the validators: the enum itself
            "framework": ["JAX"],
        })

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """All batches of `inputs` (mteb's DataLoader of dicts) embedded in one call, [N, dim] float32."""
        texts, bodies, titles = [], [], []
        for batch in inputs:
            texts.extend(batch["text"])
            # mteb joins a document's title into "text" and keeps the parts as "title" / "body"
            if "body" in batch:
                bodies.extend(batch["body"])
                titles.extend(batch["title"] if "title" in batch else [None] * len(batch["body"]))
        if not self.model.uses_prompts:
            prompt, titles_arg, to_embed = None, None, texts
        else:
            prompt = prompt_for(task_metadata.name, task_metadata.type, prompt_type)
            documents = prompt == tasks_lib.DOCUMENT and len(bodies) == len(texts)
            to_embed = bodies if documents else texts
            titles_arg = [t or None for t in titles] if documents else None
        self.calls.append((task_metadata.name, prompt, len(to_embed)))
        return self.model.embed(to_embed, task=prompt, titles=titles_arg, dim=self.dim,
                                batch_size=self.batch_size)
