"""The evaluation task registry: MTEB-named tasks over the shared data, groups, and user data.

Naming:
  * a task: `"STSBenchmark"`, `"SciFact"`, `"STS17:en-en"`, `"Tatoeba:deu-eng"`, ...
  * a family (all its subsets): `"STS17"`, `"Tatoeba"`, `"AmazonCounterfactualClassification"`
  * a group: `"sts"`, `"retrieval"`, `"classification"`, `"clustering"`, `"pair_classification"`,
    `"bitext"`, `"reranking"`, `"quick"`, `"all"`
  * user data, `"TYPE:PATH"` (docs/evaluation.md): `retrieval:` a BEIR folder (its
    `qrels/test.tsv`, or the split chosen by `qrels_split`); `sts:` a TSV (sentence1, sentence2,
    score); `pair_classification:` a TSV (sentence1, sentence2, label); `bitext:` a TSV
    (sentence1, sentence2); `classification:` a folder with train/test CSV/TSV/JSONL (text,
    label); `clustering:` a JSONL (text, label).
Names may be given as a list or one comma-separated string.

The data root is the `data_root` argument, else `$GEMINI_EMBED_DATA`, else `../shared/data`
next to the repository.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gemini_embed.data.builders import data_root  # one data folder for training and evaluation
from gemini_embed.eval import datasets as ds

TASK_TYPES = ("sts", "retrieval", "classification", "clustering", "pair_classification", "bitext", "reranking")

# Query-side task names understood by the Embedder (the `task: ... | query:` prompt).
SEARCH_RESULT = "search result"
FACT_CHECKING = "fact checking"
CLASSIFICATION = "classification"
CLUSTERING = "clustering"
SENTENCE_SIMILARITY = "sentence similarity"
CODE_RETRIEVAL = "code retrieval"
SUMMARIZATION = "summarization"
DOCUMENT = "document"  # the document side (`title: ... | text: ...`)


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation task.

    `query_task` is the Embedder task for queries, or for both sides of a symmetric task
    (STS, pairs, bitext, classification, clustering); `document_task` is the one for the
    document side of retrieval / reranking candidates. `options` go to the evaluator.
    """

    name: str
    type: str
    load: Callable[[pathlib.Path], Any]  # data root -> a container from `datasets`
    query_task: str
    document_task: str | None = None
    main_metric: str = ""
    description: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


MAIN_METRIC = {
    "sts": "cosine_spearman",
    "retrieval": "ndcg_at_10",
    "classification": "accuracy",
    "clustering": "v_measure",
    "pair_classification": "cosine_ap",
    "bitext": "f1",
    "reranking": "map",
}


# ----------------------------------------------------------------------------- registry
REGISTRY: dict[str, Task] = {}
FAMILIES: dict[str, list[str]] = {}


def register(task: Task, family: str | None = None) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.type not in TASK_TYPES:
        raise ValueError(f"{task.name}: unknown type {task.type!r}")
    if not task.main_metric:
        task = dataclasses.replace(task, main_metric=MAIN_METRIC[task.type])
    REGISTRY[task.name] = task
    if family:
        FAMILIES.setdefault(family, []).append(task.name)
    return task


def _sts(name, load, description, family=None):
    register(Task(name, "sts", load, SENTENCE_SIMILARITY, description=description), family)


_sts("STSBenchmark", ds.load_stsbenchmark, "STS Benchmark test (1,379 pairs), cosine Spearman.")
for _year, _n in (("12", 3108), ("13", 1500), ("14", 3750), ("15", 3000), ("16", 1186)):
    _sts(f"STS{_year}", lambda root, y=_year: ds.load_sts_subsets(root / "sts" / f"sts{y}" / "test.tsv"),
         f"SemEval STS 20{_year} English test ({_n:,} pairs).")
# MTEB's STS17 subset names; es-en-wmt (track 4b) is not an MTEB subset.
STS17_TRACKS = {"ar-ar": "track1.ar-ar", "en-ar": "track2.ar-en", "es-es": "track3.es-es",
                "es-en": "track4a.es-en", "es-en-wmt": "track4b.es-en", "en-en": "track5.en-en"}
for _sub, _track in STS17_TRACKS.items():
    _sts(f"STS17:{_sub}",
         lambda root, t=_track: ds.load_sts_subsets(root / "sts" / "sts17" / "test.tsv", t),
         f"SemEval-2017 STS {_track} (250 pairs).", family="STS17")

register(Task("SciFact", "retrieval", lambda root: ds.load_beir_folder(root / "scifact"), FACT_CHECKING, DOCUMENT,
              description="BEIR SciFact test: 300 claims, 5,183 abstracts, nDCG@10."))
register(Task("Cranfield", "retrieval", lambda root: ds.load_beir_folder(root / "cranfield"), SEARCH_RESULT,
              DOCUMENT, description="Cranfield 1400: 225 queries, graded qrels (4 = complete answer)."))
register(Task("CoSQA", "retrieval", lambda root: ds.load_beir_folder(root / "cosqa_dev"), CODE_RETRIEVAL,
              DOCUMENT, description="CoSQA dev as code retrieval: 313 queries over its 552 snippets "
                                    "(not MTEB's CosQA test split: not comparable)."))

register(Task("Banking77Classification", "classification", ds.load_banking77, CLASSIFICATION,
              description="Banking77, 77 intents: 10 x 8-per-label logistic regression, accuracy.",
              options={"samples_per_label": 8}))
AMAZON_SUBSETS = {"en": "EN", "en-ext": "EN-ext", "de": "DE", "ja": "JP"}
for _sub, _prefix in AMAZON_SUBSETS.items():
    register(Task(f"AmazonCounterfactualClassification:{_sub}", "classification",
                  lambda root, p=_prefix: ds.load_amazon_counterfactual(root, p), CLASSIFICATION,
                  description=f"Amazon counterfactual {_prefix}: 10 x 32-per-label logistic regression.",
                  options={"samples_per_label": 32}), family="AmazonCounterfactualClassification")

register(Task("TwentyNewsgroupsClustering", "clustering", ds.load_twentynewsgroups, CLUSTERING,
              description="20 Newsgroups subjects, MTEB legacy protocol (MiniBatchKMeans, batch 500, per set; "
                          "mean V-measure) over 10 sets of 5,954 subjects (MTEB's mean set size) drawn from the "
                          "7,532 test subjects. MTEB's own 10 sets (59,545 subjects) are not in the data, so "
                          "scores are not comparable to published ones (one k-means run varies by ~0.016).",
              options={"protocol": "sets", "n_sets": 10, "set_size": 5954}))
register(Task("TwentyNewsgroupsClustering.v2", "clustering", ds.load_twentynewsgroups, CLUSTERING,
              description="20 Newsgroups subjects, MTEB v2 protocol: 10 bootstrap draws of 16,384 from all "
                          "7,532 test subjects, MiniBatchKMeans(batch 512, n_init=1). MTEB embeds 4% of its "
                          "59,545-subject pool instead; not comparable to published scores.",
              options={"protocol": "bootstrap", "n_draws": 10, "draw_size": 16384}))

register(Task("MRPC", "pair_classification", ds.load_mrpc, SENTENCE_SIMILARITY,
              description="MSR paraphrase corpus test (1,725 pairs), cosine average precision."))

TATOEBA_LANGS = (
    "afr amh ang ara arq arz ast awa aze bel ben ber bos bre bul cat cbk ceb ces cha cmn cor csb cym dan deu "
    "dsb dtp ell epo est eus fao fin fra fry gla gle glg gsw heb hin hrv hsb hun hye ido ile ina ind isl ita "
    "jav jpn kab kat kaz khm kor kur kzj lat lfn lit lvs mal mar max mhr mkd mon nds nld nno nob nov oci orv "
    "pam pes pms pol por ron rus slk slv spa sqi srp swe swg swh tam tat tel tgl tha tuk tur tzl uig ukr urd "
    "uzb vie war wuu xho yid yue zsm").split()
for _lang in TATOEBA_LANGS:
    register(Task(f"Tatoeba:{_lang}-eng", "bitext", lambda root, lang=_lang: ds.load_tatoeba(root, lang),
                  SENTENCE_SIMILARITY, description=f"Tatoeba {_lang}->eng nearest-neighbour mining, F1."),
             family="Tatoeba")

register(Task("SNLIReranking", "reranking", ds.load_snli_reranking, SENTENCE_SIMILARITY, SENTENCE_SIMILARITY,
              description="Not an MTEB task. SNLI test premises as queries; their own hypotheses as "
                          "candidates, entailment = positive, neutral/contradiction = negative (3,079 "
                          "premises, 9,156 candidates); MAP and MRR@10 as MTEB's reranking."))

# Dev tasks: for selection (soups, checkpoints), never a test split. Not in any group.
register(Task("STSBenchmark:dev", "sts", lambda root: ds.load_stsbenchmark(root, "dev"), SENTENCE_SIMILARITY,
              description="STS Benchmark dev split (1,500 pairs), cosine Spearman."))
register(Task("SciFact:dev", "retrieval", lambda root: ds.load_beir_folder(root / "scifact", "train"), FACT_CHECKING,
              DOCUMENT, description="SciFact train claims (809) over the corpus: a dev set only for models "
                                    "not trained on scifact-train."))
register(Task("Banking77Classification:dev", "classification", ds.load_banking77_dev, CLASSIFICATION,
              description="Banking77 train split cut in two (seeded, 80/20): 8-per-label probes on the first "
                          "part, accuracy on the second.", options={"samples_per_label": 8}))
DEV_TASKS = {name.removesuffix(":dev"): name for name in REGISTRY if name.endswith(":dev")}

GROUPS: dict[str, list[str]] = {
    "sts": ["STSBenchmark", "STS12", "STS13", "STS14", "STS15", "STS16", "STS17"],
    "retrieval": ["SciFact", "Cranfield", "CoSQA"],
    "classification": ["Banking77Classification", "AmazonCounterfactualClassification"],
    "clustering": ["TwentyNewsgroupsClustering", "TwentyNewsgroupsClustering.v2"],
    "pair_classification": ["MRPC"],
    "bitext": ["Tatoeba"],
    "reranking": ["SNLIReranking"],
    # about a minute for a small model on 2 CPU cores; one task of each cheap kind
    "quick": ["STSBenchmark", "AmazonCounterfactualClassification:en", "CoSQA", "MRPC", "Tatoeba:deu-eng"],
}
GROUPS["all"] = [n for g in ("sts", "retrieval", "classification", "clustering", "pair_classification",
                             "bitext", "reranking") for n in GROUPS[g]]


# ----------------------------------------------------------------------------- user data
CUSTOM_LOADERS: dict[str, tuple[Callable[[pathlib.Path], Any], str, str | None]] = {
    "retrieval": (ds.load_beir_folder, SEARCH_RESULT, DOCUMENT),
    "sts": (ds.load_sts_tsv, SENTENCE_SIMILARITY, None),
    "pair_classification": (ds.load_pairs_tsv, SENTENCE_SIMILARITY, None),
    "bitext": (ds.load_bitext_tsv, SENTENCE_SIMILARITY, None),
    "classification": (ds.load_classification_folder, CLASSIFICATION, None),
    "clustering": (ds.load_clustering_jsonl, CLUSTERING, None),
}


def custom_task(type: str, path: str | os.PathLike, name: str | None = None, query_task: str | None = None,
                document_task: str | None = None, **options) -> Task:
    """A task over the user's own files (formats in the module docstring and docs/evaluation.md).
    Retrieval takes `split=` (default "test"): the qrels file `qrels/<split>.tsv` of the folder."""
    if type not in CUSTOM_LOADERS:
        raise ValueError(f"unknown task type {type!r} for user data; one of {sorted(CUSTOM_LOADERS)}")
    loader, default_query, default_doc = CUSTOM_LOADERS[type]
    path = pathlib.Path(path).expanduser()
    if type == "retrieval":
        loader = functools.partial(loader, split=options.pop("split", "test"))
    if type == "classification":
        options.setdefault("samples_per_label", 8)
    if type == "clustering":
        options.setdefault("protocol", "bootstrap")
    return Task(name or f"{type}:{path}", type, lambda _root, p=path: loader(p), query_task or default_query,
                document_task or default_doc, MAIN_METRIC[type], f"user data {path}", options)


# ----------------------------------------------------------------------------- resolution
def _split_names(names: str | Sequence[str | Task]) -> list[str | Task]:
    """Comma-separated names; a piece that is neither a known name nor a `TYPE:` spec continues
    the user path before it ("sts:/a,b.tsv" stays whole, "retrieval:DIR,sts:FILE" is two tasks)."""
    if isinstance(names, str):
        names = [names]
    out: list[str | Task] = []
    for n in names:
        if isinstance(n, Task):
            out.append(n)
            continue
        for piece in n.split(","):
            name = piece.strip()
            starts_task = name in REGISTRY or name in FAMILIES or name in GROUPS or \
                name.split(":", 1)[0] in CUSTOM_LOADERS
            if not starts_task and out and isinstance(out[-1], str) and out[-1].split(":", 1)[0] in CUSTOM_LOADERS:
                out[-1] += "," + piece  # a comma inside the user path before it
            elif name:
                out.append(name)
    return out


def resolve_tasks(names: str | Sequence[str | Task], *, qrels_split: str = "test") -> list[Task]:
    """Tasks for names, families, groups and `TYPE:PATH` specs, in order, without duplicates.
    `qrels_split`: the qrels file (`qrels/<split>.tsv`) of user retrieval folders."""
    result: dict[str, Task] = {}

    def add(name: str | Task, seen: tuple = ()):
        if isinstance(name, Task):
            result.setdefault(name.name, name)
        elif name in REGISTRY:
            result.setdefault(name, REGISTRY[name])
        elif name in FAMILIES:
            for member in FAMILIES[name]:
                add(member)
        elif name in GROUPS:
            if name in seen:
                raise ValueError(f"group {name!r} includes itself")
            for member in GROUPS[name]:
                add(member, seen + (name,))
        elif ":" in name and name.split(":", 1)[0] in CUSTOM_LOADERS:
            type_, path = name.split(":", 1)
            options = {"split": qrels_split} if type_ == "retrieval" else {}
            result.setdefault(name, custom_task(type_, path, name=name, **options))
        else:
            raise KeyError(f"unknown task {name!r}; see gemini_embed.eval.list_tasks() "
                           f"(groups: {sorted(GROUPS)}; user data: TYPE:PATH with TYPE in {sorted(CUSTOM_LOADERS)})")

    for n in _split_names(names):
        add(n)
    return list(result.values())


def list_tasks(type: str | None = None) -> list[str]:
    """All registered task names (optionally of one type)."""
    return [n for n, t in REGISTRY.items() if type is None or t.type == type]


@functools.lru_cache(maxsize=8)
def _load_cached(task_name: str, root: str):
    return REGISTRY[task_name].load(pathlib.Path(root))


def load_task_data(task: Task, root: str | os.PathLike | None = None):
    """The task's data container (registered tasks are cached per data root)."""
    root = data_root(root)
    if task.name in REGISTRY and REGISTRY[task.name] is task:
        return _load_cached(task.name, str(root))
    return task.load(root)
