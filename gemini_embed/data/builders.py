"""Training datasets: the registry of the shared data and users' own files, as DatasetSpecs
(readers per split, prompts, a fingerprint of the inputs); data/store.py prepares them.

Source names: `<dataset>-<split>` of the registry (`scifact-train`, `stsb-train`, ...), or a
user file `[FORMAT:]PATH` (FORMAT: generic (default), beir, classification, scored, graded, bitext; see
docs/data.md), which is a `train` split.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
import re
from collections.abc import Callable, Iterator

from gemini_embed.data import sources as src
from gemini_embed.tokenize import DOCUMENT_TASK, QUERY_TASKS

log = logging.getLogger(__name__)

BUILDER_VERSION = "1.1.0"  # bump when the stored features or a reader's output change


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A training dataset: how to read each split, and its prompts.

    query_task: the query-side task (a per-example `task` overrides it). positive_task: "document"
    (`title: {title or none} | text: {text}`) or a query task for symmetric data (both sides get it).
    """

    name: str
    readers: dict[str, Callable[[src.Problems], Iterator[dict]]]  # split -> examples
    files: tuple[pathlib.Path, ...]  # everything the readers open (for the fingerprint)
    query_task: str
    positive_task: str
    description: str = ""
    options: tuple = ()  # reader options that change the examples (part of the fingerprint)
    scored: bool = False  # examples carry graded scores: trained with CoSENT, not NCE (train/step.py)

    def __post_init__(self):
        for task in (self.query_task, self.positive_task):
            if task not in QUERY_TASKS + (DOCUMENT_TASK,):
                raise ValueError(f"dataset {self.name}: unknown task {task!r}")

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{BUILDER_VERSION}|{self.name}|{sorted(self.readers)}|{self.options!r}".encode())
        for f in self.files:
            st = f.stat()
            h.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:12]


def data_root(path=None) -> pathlib.Path:
    """The raw data folder of training and evaluation: `path`, else $GEMINI_EMBED_DATA, else
    ../shared/data next to the repo."""
    root = path or os.environ.get("GEMINI_EMBED_DATA")
    return pathlib.Path(root).expanduser() if root else pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


# ----------------------------------------------------------------------------- registry
STSB_NAMES = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
SCORE_THRESHOLD = 4.0  # of 5: STS pairs at least this similar are positives
AMAZON = {"en": "EN", "en-ext": "EN-ext", "de": "DE", "ja": "JP"}
TATOEBA_SUFFIX = "-eng.eng"
PARALLEL = {"parallel-bible": "bible_corpus_nt", "parallel-mafand": "mafand_mt_train",
            "parallel-mediawiki": "mediawiki_core_i18n", "parallel-mozilla": "mozilla_org_l10n",
            "parallel-osm-id": "osm_id_editor_i18n", "parallel-osm-website": "osm_website_i18n",
            "parallel-rosetta": "rosetta_balcanica_train", "parallel-udhr": "udhr",
            "parallel-wikipedia-android": "wikipedia_android_strings"}  # source name -> folder of ../parallel
# Placeholders removed (`sources.parallel`): dropping the pairs that have any would lose 30% of
# MediaWiki's (118,687 of 399,962) for strings whose words are translated all the same.
PARALLEL_PLACEHOLDERS = "normalise"
PARALLEL_UI = ("parallel-mediawiki", "parallel-mozilla", "parallel-osm-id", "parallel-osm-website",
               "parallel-wikipedia-android")  # the interface-string datasets
PARALLEL_TEMPERATURE = 2.0  # language shares ~ n^(1/2) within a dataset


def _label_words(label: str) -> str:
    return label.replace("_", " ")


def registry(root=None) -> dict[str, DatasetSpec]:
    """The datasets of the shared data (see its README), by name."""
    r = data_root(root)
    specs: list[DatasetSpec] = []

    def beir(name, folder, splits, task, description):
        f = r / folder
        files = [p for p in (f / "corpus.jsonl", f / "corpus.jsonl.gz", f / "queries.jsonl") if p.exists()]
        specs.append(DatasetSpec(
            name, {s: functools.partial(src.beir, f, s) for s in splits},
            tuple(files + [f / "qrels" / f"{s}.tsv" for s in splits]), task, DOCUMENT_TASK, description))

    beir("scifact", "scifact", ("train", "test"), "fact checking", "SciFact claims -> cited abstracts (BEIR qrels)")
    beir("cranfield", "cranfield", ("test",), "search result", "Cranfield 1400 queries -> relevant documents")
    beir("cosqa", "cosqa_dev", ("test",), "code retrieval", "CoSQA dev queries -> code snippets")

    sts = r / "sts" / "stsbenchmark"
    stsb = {s: r_ for s, r_ in (("train", "sts-train.csv"), ("validation", "sts-dev.csv"), ("test", "sts-test.csv"))}
    specs.append(DatasetSpec(
        "stsb", {s: functools.partial(src.pairs_table, sts / f, first="sentence1", second="sentence2", score="score",
                                      threshold=SCORE_THRESHOLD, names=STSB_NAMES, delimiter="\t")
                 for s, f in stsb.items()},
        tuple(sts / f for f in stsb.values()), "sentence similarity", "sentence similarity",
        f"STS Benchmark pairs scored >= {SCORE_THRESHOLD}", (SCORE_THRESHOLD,)))
    specs.append(DatasetSpec(
        "stsb-scored", {s: functools.partial(src.pairs_table, sts / stsb[s], first="sentence1", second="sentence2",
                                             score="score", names=STSB_NAMES, delimiter="\t")
                        for s in ("train", "validation")},
        tuple(sts / stsb[s] for s in ("train", "validation")), "sentence similarity", "sentence similarity",
        "STS Benchmark pairs with their 0-5 gold scores (all of them; a graded loss)", scored=True))
    for year in ("12", "13", "14", "15", "16", "17"):
        path = r / "sts" / f"sts{year}" / "test.tsv"
        specs.append(DatasetSpec(
            f"sts{year}", {"test": functools.partial(src.pairs_table, path, first="sentence1", second="sentence2",
                                                      score="score", threshold=SCORE_THRESHOLD)},
            (path,), "sentence similarity", "sentence similarity", f"STS 20{year} pairs scored >= {SCORE_THRESHOLD}",
            (SCORE_THRESHOLD,)))
    mrpc = {s: r / "mrpc" / f"{s}.tsv" for s in ("train", "test")}
    specs.append(DatasetSpec(
        "mrpc", {s: functools.partial(src.pairs_table, p, first="sentence1", second="sentence2", score="label",
                                      threshold=1.0) for s, p in mrpc.items()},
        tuple(mrpc.values()), "sentence similarity", "sentence similarity", "MRPC paraphrase pairs (label 1)"))
    snli = {"validation": "dev", "test": "test"}
    nli = r / "snli_senteval"
    specs.append(DatasetSpec(
        "snli-triplets", {s: functools.partial(src.pairs_table, nli / f"triplets_{f}.tsv", first="anchor",
                                               second="positive", negative="negative") for s, f in snli.items()},
        tuple(nli / f"triplets_{f}.tsv" for f in snli.values()), "sentence similarity", "sentence similarity",
        "SNLI premise -> entailed hypothesis, contradiction as hard negative"))
    specs.append(DatasetSpec(
        "snli", {s: functools.partial(src.pairs_table, nli / f"{f}.tsv.gz", first="premise", second="hypothesis",
                                      score="label", threshold=1.0,
                                      labels={"entailment": 1.0, "neutral": 0.0, "contradiction": 0.0})
                 for s, f in snli.items()},
        tuple(nli / f"{f}.tsv.gz" for f in snli.values()), "sentence similarity", "sentence similarity",
        "SNLI labelled pairs: entailment -> positive"))

    bank = {s: r / "banking77" / f"{s}.csv" for s in ("train", "test")}
    specs.append(DatasetSpec(
        "banking77", {s: functools.partial(src.classification, p, label="category", label_text=_label_words)
                      for s, p in bank.items()},
        tuple(bank.values()), "classification", DOCUMENT_TASK, "Banking77 utterance -> intent label text"))
    for sub, prefix in AMAZON.items():
        files = {s: r / "amazon_counterfactual" / f"{prefix}_{f}.tsv"
                 for s, f in (("train", "train"), ("validation", "valid"), ("test", "test"))}
        specs.append(DatasetSpec(
            f"amazon-counterfactual-{sub}",
            {s: functools.partial(src.classification, p, text="sentence", label="is_counterfactual",
                                  label_text=_COUNTERFACTUAL.__getitem__) for s, p in files.items()},
            tuple(files.values()), "classification", DOCUMENT_TASK,
            f"Amazon counterfactual {prefix}: text -> label text"))
    news = {s: r / "twentynewsgroups" / f"{s}_subjects.jsonl.gz" for s in ("train", "test")}
    specs.append(DatasetSpec(
        "twentynewsgroups", {s: functools.partial(src.classification, p) for s, p in news.items()},
        tuple(news.values()), "classification", DOCUMENT_TASK, "20 Newsgroups subject -> newsgroup name"))

    # Training-only sets (no evaluation split; see the data README).
    squad = r / "squad_v1.1_train" / "squad_v1.1_train.jsonl.gz"
    specs.append(DatasetSpec("squad", {"train": functools.partial(src.squad, squad)}, (squad,), "question answering",
                             DOCUMENT_TASK, "SQuAD v1.1 train questions -> Wikipedia paragraphs"))
    specs.append(DatasetSpec("squad-titles", {"train": functools.partial(src.squad, squad, query="title")}, (squad,),
                             "search result", DOCUMENT_TASK,
                             "SQuAD v1.1 train article titles -> their paragraphs (pre-finetuning pairs)", ("title",)))
    tw = r / "twitter_url_paraphrase"
    specs.append(DatasetSpec("twitter-url", {"train": functools.partial(src.twitter_paraphrase, tw)},
                             tuple(tw / f"train.{n}" for n in ("a.toks", "b.toks", "sim.txt")), "sentence similarity",
                             "sentence similarity", "Twitter URL paraphrases (label 1), a non-paraphrase of the same "
                             "headline as hard negative"))
    code = r / "code_docstring_python" / "python_docstring_code_pairs.jsonl.gz"
    specs.append(DatasetSpec("code-docstring", {"train": functools.partial(src.docstring_code, code)}, (code,),
                             "code retrieval", DOCUMENT_TASK, "Python docstring summaries -> their functions"))

    # Interface strings have placeholders; prose (news, scripture, law) has "$5" and "50%" as text.
    placeholders = {n: PARALLEL_PLACEHOLDERS if n in PARALLEL_UI else "keep" for n in PARALLEL}
    for name, folder in PARALLEL.items():  # one source per dataset: a batch holds one dataset's pairs
        f = r / "parallel" / folder
        specs.append(DatasetSpec(
            name, {"train": functools.partial(src.parallel, f, placeholders=placeholders[name],
                                              temperature=PARALLEL_TEMPERATURE)},
            tuple(sorted(f.glob("*-en.tsv.gz"))), "sentence similarity", "sentence similarity",
            f"{folder}: X -> its English translation, languages tempered (T={PARALLEL_TEMPERATURE})",
            (placeholders[name], PARALLEL_TEMPERATURE)))

    tatoeba = sorted((r / "tatoeba").glob(f"tatoeba.*{TATOEBA_SUFFIX}"))
    specs.append(DatasetSpec(
        "tatoeba", {"test": functools.partial(_tatoeba, tatoeba)},
        tuple(tatoeba) + tuple(_tatoeba_source(p) for p in tatoeba), "sentence similarity", "sentence similarity",
        "Tatoeba sentences (112 languages) -> English translations"))
    return {s.name: s for s in specs}


# Registered training splits that share exact texts (whitespace- and case-normalised) with an
# evaluation task's test data, by task family, and why; tests/data/test_eval_overlap.py measures
# every registered split and fails on an overlap not listed here (or listed but gone). Training on
# a listed source makes those tasks' scores seen (a run meant to leave STS12-16 unseen uses no stsb or mrpc).
EVAL_OVERLAP: dict[str, dict[str, str]] = {
    "scifact-train": {"SciFact": "the BEIR corpus is shared by the train and test queries"},
    **{f"{name}-{s}": {**{f"STS1{y}": "STS Benchmark pairs are drawn from STS 2012-2016" for y in "23456"},
                       "STSBenchmark": "repeated sentences (MSRvid, images) across the benchmark's splits",
                       "MRPC": "STS Benchmark's MSRpar pairs come from the MSR paraphrase corpus"}
       for name in ("stsb", "stsb-scored") for s in ("train", "validation")},
    "mrpc-train": {"STS12": "STS 2012's MSRpar pairs come from the MSR paraphrase corpus",
                   "STSBenchmark": "STS Benchmark's MSRpar pairs come from the MSR paraphrase corpus",
                   "MRPC": "repeated sentences across the corpus's train and test splits"},
    **{f"snli{t}-validation": {"SNLIReranking": "premises repeated across SNLI's splits",
                               "STS15": "a few short captions", "STS17": "a few short captions"}
       for t in ("", "-triplets")},
    "banking77-train": {"Banking77Classification": "repeated utterances across the splits",
                        "Tatoeba": "two short phrases"},
    **{f"amazon-counterfactual-{sub}-{s}": {"AmazonCounterfactualClassification": "EN-ext contains EN; "
                                            "repeated sentences across the splits"}
       for sub in ("en", "en-ext", "de", "ja") for s in ("train", "validation")},
    "twentynewsgroups-train": {"TwentyNewsgroupsClustering": "repeated subject lines (Re: ...) across splits",
                               "TwentyNewsgroupsClustering.v2": "repeated subject lines (Re: ...) across splits"},
    "squad-train": {"Tatoeba": "three short questions"},
    "squad-titles-train": {"TwentyNewsgroupsClustering": "article titles equal to one-word subject lines",
                           "TwentyNewsgroupsClustering.v2": "article titles equal to one-word subject lines"},
}
# The parallel data's English sides recur once per language, so a few shared texts count hundreds of
# times: UDHR's article 1 (in Tatoeba too) and short questions ("Are you sure?") of the UI strings.
EVAL_OVERLAP |= {f"{name}-train": {"Tatoeba": "short common sentences (UDHR article 1; 'Are you sure?')"}
                 for name in ("parallel-bible", "parallel-mafand", "parallel-mediawiki", "parallel-osm-website",
                              "parallel-udhr", "parallel-wikipedia-android")}
EVAL_OVERLAP["parallel-mafand-train"]["STS16"] = "one news sentence"
EVAL_OVERLAP["parallel-rosetta-train"] = {"SciFact": "a few report phrases"}
EVAL_OVERLAP["parallel-wikipedia-android-train"] |= {"SciFact": "the string 'Table of Contents'",
                                                     "STS14": "the string 'Picture of the day'"}
del EVAL_OVERLAP["amazon-counterfactual-de-validation"]  # measured: none
EVAL_OVERLAP["stsb-scored-train"] |= {"STS17": "a few sentences of low-scored pairs",
                                      "Tatoeba": "two short sentences of low-scored pairs"}
EVAL_OVERLAP["stsb-scored-validation"]["Tatoeba"] = "one short sentence of a low-scored pair"
for _dev in ("stsb-validation", "stsb-scored-validation"):  # the dev split: also STS17's and an SNLI caption
    EVAL_OVERLAP[_dev] |= {"STS17": "STS 2017's en-en track reuses STS Benchmark dev/test pairs",
                           "SNLIReranking": "one SNLI caption (STS Benchmark's track5 is SNLI)"}


_COUNTERFACTUAL = {"1": "counterfactual statement", "0": "not a counterfactual statement"}


def _tatoeba_source(eng: pathlib.Path) -> pathlib.Path:
    lang = eng.name.removeprefix("tatoeba.").removesuffix(TATOEBA_SUFFIX)
    return eng.with_name(f"tatoeba.{lang}-eng.{lang}")


def _tatoeba(english_files, problems: src.Problems) -> Iterator[dict]:
    for eng in english_files:
        yield from src.bitext(_tatoeba_source(eng), eng, problems)


FILE_FORMATS = ("generic", "beir", "classification", "scored", "graded", "bitext")


def _split_of_file(path: pathlib.Path, root=None) -> str:
    """The split a user path counts as: `test` for a file or folder of the shared benchmark data
    whose name says test (sts12/test.tsv, sts-test.csv, ...), so that a path cannot get around the
    test-split guard; else `train`."""
    path, base = path.resolve(), data_root(root).resolve()
    if base not in path.parents and path != base:
        return "train"
    names = [p.name.lower() for p in [path, *path.parents] if p != base and base in p.parents]
    return "test" if any(re.search(r"(^|[^a-z])test([^a-z]|$)", n) for n in names) else "train"


def file_spec(spec: str, root=None) -> DatasetSpec:
    """A user's own file or folder, `[FORMAT:]PATH`, as a dataset with one `train` split.

    generic: JSONL/TSV (query, positive[, negatives, task, title]); beir: a BEIR folder (qrels/train.tsv);
    classification: CSV/TSV/JSONL (text, label); scored: TSV (sentence1, sentence2, score >= 4 of 5);
    graded: the same TSV, every pair with its score (trained with CoSENT); bitext: TSV (sentence1, sentence2).
    """
    fmt, _, path = spec.partition(":") if spec.split(":", 1)[0] in FILE_FORMATS else ("generic", "", spec)
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"training data {spec!r}: {path} does not exist")
    name = "file-" + "".join(c if c.isalnum() else "_" for c in path.name)[:40]
    readers = {
        "generic": (functools.partial(src.generic, path), "search result", DOCUMENT_TASK),
        "beir": (functools.partial(src.beir, path, "train"), "search result", DOCUMENT_TASK),
        "classification": (functools.partial(src.classification, path), "classification", DOCUMENT_TASK),
        "scored": (functools.partial(src.pairs_table, path, first="sentence1", second="sentence2", score="score",
                                     threshold=SCORE_THRESHOLD), "sentence similarity", "sentence similarity"),
        "graded": (functools.partial(src.pairs_table, path, first="sentence1", second="sentence2", score="score"),
                   "sentence similarity", "sentence similarity"),
        "bitext": (functools.partial(src.pairs_table, path, first="sentence1", second="sentence2"),
                   "sentence similarity", "sentence similarity"),
    }[fmt]
    files = tuple(sorted(p for p in path.rglob("*") if p.is_file())) if path.is_dir() else (path,)
    return DatasetSpec(name, {_split_of_file(path, root): readers[0]}, files, readers[1], readers[2],
                       f"{fmt} file {path}", (fmt,), scored=fmt == "graded")


def _registered(name: str, reg: dict[str, DatasetSpec]) -> tuple[DatasetSpec, str] | None:
    dataset, _, split = name.rpartition("-")
    return (reg[dataset], split) if dataset in reg and split in reg[dataset].readers else None


def resolve_source(name: str, root=None) -> tuple[DatasetSpec, str]:
    """(dataset, split) of a source name: `<dataset>-<split>` from the registry, or a file."""
    name = name.strip()
    reg = registry(root)
    if registered := _registered(name, reg):
        return registered
    if "/" in name or "." in name or name.split(":", 1)[0] in FILE_FORMATS:
        spec = file_spec(name, root)
        return spec, next(iter(spec.readers))
    known = sorted(f"{d}-{s}" for d, spec in reg.items() for s in spec.readers)
    raise ValueError(f"unknown training source {name!r}: not a registered dataset-split ({', '.join(known)}) "
                     f"nor a file path")


def is_graded(name: str, root=None) -> bool:
    """Whether source `name` has graded scores (CoSENT batches), without opening any file."""
    name = name.strip()
    if registered := _registered(name, registry(root)):
        return registered[0].scored
    return name.split(":", 1)[0] == "graded"
