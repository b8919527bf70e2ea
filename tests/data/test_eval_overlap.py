"""No evaluation text enters training unnoticed: every registered training split is measured
against the test data of every registered evaluation task (exact texts, whitespace and case
normalised), and may share texts only with the task families `builders.EVAL_OVERLAP` declares."""
import collections
import dataclasses

import pytest

from gemini_embed.data import builders, sources as src
from gemini_embed.eval import tasks as eval_tasks

# Fields of the evaluation containers that are not test texts: labels, scores, relevance, and the
# classification train split (the MTEB protocol fits its probe on it).
NOT_TEST_TEXT = {"train_texts", "train_labels", "test_labels", "labels", "scores", "qrels"}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _texts(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v)


@pytest.fixture(scope="module")
def eval_texts() -> dict[str, set[str]]:
    """normalised text -> the task families whose test data holds it."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for task in eval_tasks.resolve_tasks("all"):
        data = eval_tasks.load_task_data(task)
        family = task.name.split(":")[0]
        for f in dataclasses.fields(data):
            if f.name not in NOT_TEST_TEXT:
                for t in _texts(getattr(data, f.name)):
                    if t.strip():
                        out[_norm(t)].add(family)
    assert len(out) > 200_000  # every task loaded (SciFact's corpus, 112 Tatoeba languages, ...)
    return out


SPLITS = [(name, split) for name, spec in sorted(builders.registry().items()) for split in spec.readers
          if split != "test"]


@pytest.mark.parametrize("name,split", SPLITS, ids=[f"{n}-{s}" for n, s in SPLITS])
def test_training_split_shares_only_declared_texts(eval_texts, name, split):
    spec = builders.registry()[name]
    shared: collections.Counter[str] = collections.Counter()
    for ex in spec.readers[split](src.Problems("fail")):
        for text in [ex["query"], ex["positive"], *ex["negatives"]]:
            for family in eval_texts.get(_norm(text), ()):
                shared[family] += 1
    declared = set(builders.EVAL_OVERLAP.get(f"{name}-{split}", {}))
    assert set(shared) == declared, (f"{name}-{split} shares texts with {dict(shared)}; declared: {sorted(declared)}")

