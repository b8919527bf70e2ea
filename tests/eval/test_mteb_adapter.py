"""The mteb adapter: prompt mapping, and mteb.evaluate on local tasks scoring as our evaluator does."""
import csv
import hashlib
import os

import numpy as np
import pytest
from reference_libs import require

mteb = require("mteb")
datasets = require("datasets")

from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from gemini_embed.eval import custom_task, evaluate_task, tasks as tasks_lib  # noqa: E402
from gemini_embed.eval.mteb_adapter import MtebEncoder, prompt_for  # noqa: E402
from gemini_embed.tokenize import apply_prompt  # noqa: E402

DATA = os.environ["GEMINI_EMBED_DATA"]


def metadata(name, type_, main_score):
    return TaskMetadata(
        name=name, dataset={"path": "local/" + name, "revision": "local"}, description="local test task",
        reference=None, type=type_, category="t2t", modalities=["text"], eval_splits=["test"],
        eval_langs=["eng-Latn"], main_score=main_score, date=None, domains=None, task_subtypes=None,
        license=None, annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation="")


class LocalSTSBenchmark(AbsTaskSTS):
    """STS Benchmark test read straight from the shared csv (tab separated, QUOTE_NONE)."""
    metadata = metadata("STSBenchmark", "STS", "cosine_spearman")
    min_score, max_score = 0, 5

    def load_data(self, num_proc=None, **kwargs):
        with open(os.path.join(DATA, "sts", "stsbenchmark", "sts-test.csv"), encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        self.dataset = {"default": {"test": datasets.Dataset.from_dict({
            "sentence1": [r[5] for r in rows], "sentence2": [r[6] for r in rows],
            "score": [float(r[4]) for r in rows]})}}
        self.data_loaded = True


TINY_CORPUS = {"d1": ("Cats", "cats purr and sleep"), "d2": ("", "dogs bark at night"),
               "d3": ("Birds", "birds sing in the morning"), "d4": ("Fish", "fish swim in water")}
TINY_QUERIES = {"q1": "why do cats purr", "q2": "which animals sing", "q3": "what barks"}
TINY_QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d2": 1}}


class TinyRetrieval(AbsTaskRetrieval):
    metadata = metadata("TinyRetrieval", "Retrieval", "ndcg_at_10")

    def load_data(self, num_proc=None, **kwargs):
        corpus = datasets.Dataset.from_dict({"id": list(TINY_CORPUS), "title": [t for t, _ in TINY_CORPUS.values()],
                                             "text": [x for _, x in TINY_CORPUS.values()]})
        queries = datasets.Dataset.from_dict({"id": list(TINY_QUERIES), "text": list(TINY_QUERIES.values())})
        self.dataset = {"default": {"test": {"corpus": corpus, "queries": queries, "relevant_docs": TINY_QRELS,
                                             "top_ranked": None}}}
        self.data_loaded = True


class HashedEmbedder:
    """Embedder stand-in: hashed bag of words of the prompted text; records (task, titles, texts)."""
    name, dim, max_length = "hashed", 64, 128

    def __init__(self, uses_prompts=True):
        self.uses_prompts, self.calls = uses_prompts, []

    def embed(self, texts, task=None, titles=None, dim=None, batch_size=64):
        self.calls.append((task, None if titles is None else list(titles), list(texts)))
        out = np.full((len(texts), self.dim), 1e-3, np.float32)
        for i, t in enumerate(apply_prompt(texts, task if self.uses_prompts else None, titles)):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        out = out[:, :dim or self.dim]
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def main_score(result):
    (task_result,) = result.task_results
    return task_result.get_score()


def test_prompt_mapping():
    assert prompt_for("SciFact", "Retrieval", "query") == tasks_lib.FACT_CHECKING  # our registry's prompts
    assert prompt_for("SciFact", "Retrieval", "document") == tasks_lib.DOCUMENT
    assert prompt_for("STSBenchmark", "STS", None) == tasks_lib.SENTENCE_SIMILARITY
    assert prompt_for("SomeNewsRetrieval", "Retrieval", "query") == tasks_lib.SEARCH_RESULT  # by mteb type
    assert prompt_for("SomeNewsRetrieval", "Retrieval", "document") == tasks_lib.DOCUMENT
    assert prompt_for("Emotions", "Classification", None) == tasks_lib.CLASSIFICATION
    with pytest.raises(ValueError, match="'Any2AnyRetrieval'"):
        prompt_for("X", "Any2AnyRetrieval", "query")
    with pytest.raises(ValueError, match="dim=65"):
        MtebEncoder(HashedEmbedder(), dim=65)


@pytest.mark.parametrize("uses_prompts", [True, False])
def test_retrieval_prompts_and_score_match_our_evaluator(tmp_path, uses_prompts):
    emb = HashedEmbedder(uses_prompts)
    result = mteb.evaluate(MtebEncoder(emb), [TinyRetrieval()], cache=None, show_progress_bar=False)
    calls = {tuple(c[2]): c for c in emb.calls}
    q_call = next(c for c in calls.values() if "what barks" in c[2])
    d_call = next(c for c in calls.values() if "fish swim in water" in c[2] or "Fish fish swim in water" in c[2])
    if uses_prompts:
        assert q_call[0] == tasks_lib.SEARCH_RESULT and q_call[1] is None
        assert d_call[0] == tasks_lib.DOCUMENT and "fish swim in water" in d_call[2]
        assert d_call[1][d_call[2].index("dogs bark at night")] is None  # empty title -> none
        assert d_call[1][d_call[2].index("fish swim in water")] == "Fish"
    else:  # the text mteb joined, no prompt
        assert q_call[0] is None and d_call[0] is None and "Fish fish swim in water" in d_call[2]

    # the same data through our evaluator (a BEIR folder) gives the same nDCG@10
    (tmp_path / "qrels").mkdir()
    import json
    with open(tmp_path / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in TINY_CORPUS.items())
    with open(tmp_path / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": q, "text": x}) + "\n" for q, x in TINY_QUERIES.items())
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in TINY_QRELS.items() for d, s in docs.items()))
    ours = evaluate_task(lambda texts, task=None, titles=None: emb.embed(texts, task=task, titles=titles),
                         custom_task("retrieval", tmp_path), use_prompts=uses_prompts)
    assert abs(main_score(result) - ours["main_score"]) < 1e-4


@pytest.mark.slow
def test_minilm_stsbenchmark_matches_our_evaluator():
    import gemini_embed as ge

    model = ge.Embedder.from_pretrained("all-minilm-l6-v2")
    adapter = MtebEncoder(model)
    result = mteb.evaluate(adapter, [LocalSTSBenchmark()], cache=None, show_progress_bar=False)
    ours = evaluate_task(model.embed, "STSBenchmark", use_prompts=model.uses_prompts)
    diff = main_score(result) - ours["main_score"]
    print(f"mteb {main_score(result):.8f} ours {ours['main_score']:.8f} difference {diff:.2e}")
    assert [c[1:] for c in adapter.calls] == [(None, 1379), (None, 1379)]
    assert abs(main_score(result) - ours["main_score"]) < 1e-4
    assert abs(ours["main_score"] - 0.82032) < 1e-4  # the published all-MiniLM-L6-v2 score
