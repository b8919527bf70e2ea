"""Readers of the training formats, with bad-input handling.

Every reader yields examples as plain dicts (what the tfds builders store)::

  {"query": str, "positive": str, "title": str,            # title of the positive; "" = none
   "negatives": [str, ...], "negative_titles": [str, ...],  # hard negatives (may be empty)
   "task": str,                                             # query-side task; "" = the dataset's
   "score": float,                                          # graded gold similarity; NaN = none
   "origin": "file:line"}                                   # where the example came from

Bad input (a malformed line, a missing field, an empty text, an unknown id in qrels, invalid
UTF-8, an unparsable value) goes to a `Problems` object, which either raises `DataError` naming
file, line, field and value (on_error="fail") or counts and skips it (on_error="skip").
"""
from __future__ import annotations

import collections
import csv
import functools
import gzip
import json
import logging
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from gemini_embed.tokenize import QUERY_TASKS

csv.field_size_limit(1 << 30)
log = logging.getLogger(__name__)

_BAD_LINE = "\x00gemini_embed:undecodable\x00"  # stands in for a line already reported as bad UTF-8


class DataError(ValueError):
    """Bad training input; the message names the file and the 1-based line."""

    def __init__(self, path, line: int | None, reason: str, detail: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}: {detail}")
        self.path, self.line, self.reason = str(path), line, reason


class Problems:
    """The bad-input policy of one preparation: fail at the first problem, or skip and count.

    Skipped problems are counted per reason and per file; the first `max_logged` are logged with
    their location, and `summary()` gives the counts printed at the end of a preparation.
    """

    def __init__(self, on_error: str = "skip", max_logged: int = 10):
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error, self.max_logged = on_error, max_logged
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()  # (file, reason) -> n
        self.first: list[str] = []

    def report(self, path, line: int | None, reason: str, detail: str) -> None:
        err = DataError(path, line, reason, detail)
        if self.on_error == "fail":
            raise err
        self.counts[(str(path), reason)] += 1
        if len(self.first) < self.max_logged:
            self.first.append(str(err))
            log.warning("skipped: %s", err)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_reason(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        for (_, reason), n in self.counts.items():
            out[reason] += n
        return dict(sorted(out.items()))

    def summary(self) -> str:
        if not self.counts:
            return "no bad input"
        lines = [f"{self.total} bad input(s) skipped: " + ", ".join(f"{r} {n}" for r, n in self.by_reason().items())]
        lines += [f"  {path}: {reason} x{n}" for (path, reason), n in sorted(self.counts.items())]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- line readers
def _open_binary(path: pathlib.Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line break); a line that is not UTF-8 is reported
    and replaced by a marker, so that line numbers of a CSV reader stay right."""
    path = pathlib.Path(path)
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark is not text
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                problems.report(path, lineno, "invalid_utf8", f"byte {e.start} of the line is not UTF-8 "
                                                              f"({raw[e.start:e.start + 4]!r})")
                yield lineno, _BAD_LINE


def read_jsonl(path, problems: Problems) -> Iterator[tuple[int, dict]]:
    """(line, object) for each non-empty line that holds a JSON object."""
    for lineno, line in read_lines(path, problems):
        if line == _BAD_LINE or not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.report(path, lineno, "malformed", f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            problems.report(path, lineno, "malformed", f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def read_table(path, problems: Problems, *, names: Sequence[str] | None = None, delimiter: str | None = None,
               quoting: int | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row dict) of a CSV/TSV. The header is the first line unless `names` are given.
    Tab-separated files (.tsv/.txt/STS .csv with delimiter="\\t") are read without quoting."""
    path = pathlib.Path(path)
    plain = path.name.removesuffix(".gz")
    if delimiter is None:
        delimiter = "\t" if plain.endswith((".tsv", ".txt")) else ","
    if quoting is None:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    numbered = read_lines(path, problems)
    reader = csv.reader((line for _, line in numbered), delimiter=delimiter, quoting=quoting, strict=True)
    header = list(names) if names is not None else None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problems.report(path, reader.line_num, "malformed", f"unreadable {plain} row ({e})")
            continue
        lineno = reader.line_num
        if any(_BAD_LINE in cell for cell in row) or not row:
            continue
        if header is None:
            header = [h.strip() for h in row]
            continue
        if len(row) < len(header):
            problems.report(path, lineno, "malformed", f"{len(row)} fields, the header has {len(header)} "
                                                       f"({', '.join(header)})")
            continue
        yield lineno, dict(zip(header, row))  # extra trailing fields (STSb licence notes) are ignored


# ----------------------------------------------------------------------------- fields
def text_field(obj: dict, field: str, path, line: int, problems: Problems, *, optional: bool = False) -> str | None:
    """obj[field] as a non-empty str (None after reporting it). An optional field may be absent
    or empty (returns "")."""
    value = obj.get(field)
    if value is None:
        if optional:
            return ""
        problems.report(path, line, "missing_field", f"no field {field!r} (fields: {sorted(obj)})")
        return None
    if not isinstance(value, str):
        problems.report(path, line, "malformed", f"field {field!r} must be a string, got "
                                                 f"{type(value).__name__} {json.dumps(value)[:60]}")
        return None
    if not value.strip() and not optional:
        problems.report(path, line, "empty_text", f"field {field!r} is empty")
        return None
    return value.strip()


def example(query: str, positive: str, origin: str, *, title: str = "", negatives: Sequence[str] = (),
            negative_titles: Sequence[str] | None = None, task: str = "",
            score: float = float("nan")) -> dict[str, Any]:
    return {"query": query, "positive": positive, "title": title, "negatives": list(negatives),
            "negative_titles": list(negative_titles) if negative_titles is not None else [""] * len(negatives),
            "task": task, "score": float(score), "origin": origin}


def _origin(path, line) -> str:
    path = pathlib.Path(path)
    return f"{path.parent.name}/{path.name}:{line}"


# ----------------------------------------------------------------------------- formats
def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz found")


def beir(folder, split: str, problems: Problems, *, min_score: float = 1.0) -> Iterator[dict]:
    """BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv): one example per qrels
    row with score >= min_score (title + text of the document); documents judged <= 0 for the
    same query become its hard negatives."""
    folder = pathlib.Path(folder)
    corpus_path, queries_path = _find(folder, "corpus.jsonl"), _find(folder, "queries.jsonl")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    docs: dict[str, tuple[str, str]] = {}
    for line, obj in read_jsonl(corpus_path, problems):
        field = functools.partial(text_field, obj, path=corpus_path, line=line, problems=problems)
        doc_id, text, title = field("_id"), field("text"), field("title", optional=True)
        if doc_id is not None and text is not None and title is not None:
            docs[doc_id] = (title, text)
    queries: dict[str, str] = {}
    for line, obj in read_jsonl(queries_path, problems):
        field = functools.partial(text_field, obj, path=queries_path, line=line, problems=problems)
        qid, text = field("_id"), field("text")
        if qid is not None and text is not None:
            queries[qid] = text  # metadata (SciFact's evidence labels) is never read
    judged: list[tuple[int, str, str, float]] = []
    for line, row in read_table(qrels_path, problems):
        if "query-id" not in row or "corpus-id" not in row or "score" not in row:
            problems.report(qrels_path, line, "missing_field",
                            f"qrels need query-id, corpus-id, score; got {sorted(row)}")
            continue
        qid, did = row["query-id"].strip(), row["corpus-id"].strip()
        try:
            score = float(row["score"])
        except ValueError:
            problems.report(qrels_path, line, "bad_value", f"score {row['score']!r} is not a number")
            continue
        if qid not in queries:
            problems.report(qrels_path, line, "unknown_id", f"query-id {qid!r} is not in {queries_path.name}")
        elif did not in docs:
            problems.report(qrels_path, line, "unknown_id", f"corpus-id {did!r} is not in {corpus_path.name}")
        else:
            judged.append((line, qid, did, score))
    negatives: dict[str, list[str]] = collections.defaultdict(list)
    for _, qid, did, score in judged:
        if score <= 0:
            negatives[qid].append(did)
    for line, qid, did, score in judged:
        if score >= min_score:
            neg = negatives.get(qid, [])
            yield example(queries[qid], docs[did][1], _origin(qrels_path, line), title=docs[did][0],
                          negatives=[docs[d][1] for d in neg], negative_titles=[docs[d][0] for d in neg])


def pairs_table(path, problems: Problems, *, first: str, second: str, score: str | None = None,
                threshold: float | None = None, labels: dict[str, float] | None = None,
                negative: str | None = None, names: Sequence[str] | None = None, delimiter: str | None = None,
                counter: collections.Counter | None = None) -> Iterator[dict]:
    """Pairs (or triplets) from a table: `first` -> `second` [, hard negative column `negative`].
    With `score` and `threshold`, only rows whose score (a number, or a label mapped through
    `labels`) is >= `threshold` are positives; with `score` alone every row is kept with its score
    (for a graded loss). `counter["rows"]` / `counter["kept"]` count rows read and kept."""
    counter = counter if counter is not None else collections.Counter()
    for line, row in read_table(path, problems, names=names, delimiter=delimiter):
        counter["rows"] += 1
        if score is not None:
            raw = row.get(score)
            if raw is None:
                problems.report(path, line, "missing_field", f"no column {score!r}")
                continue
            try:
                value = labels[raw.strip()] if labels is not None else float(raw)
            except (KeyError, ValueError):
                problems.report(path, line, "bad_value", f"{score} {raw!r} is not "
                                + (f"one of {sorted(labels)}" if labels is not None else "a number"))
                continue
            if threshold is not None and value < threshold:
                continue
        a, b = text_field(row, first, path, line, problems), text_field(row, second, path, line, problems)
        n = text_field(row, negative, path, line, problems) if negative else ""
        if a is None or b is None or n is None:
            continue
        counter["kept"] += 1
        graded = {"score": value} if score is not None and threshold is None else {}
        yield example(a, b, _origin(path, line), negatives=[n] if n else [], **graded)


def classification(path, problems: Problems, *, text: str = "text", label: str = "label",
                   label_text: Callable[[str], str] = lambda s: s) -> Iterator[dict]:
    """(text, label text) pairs from a CSV/TSV/JSONL; equal label texts are equal targets."""
    path = pathlib.Path(path)
    rows: Iterable[tuple[int, dict]]
    rows = read_jsonl(path, problems) if ".jsonl" in path.name else read_table(path, problems)
    for line, row in rows:
        t, lab = text_field(row, text, path, line, problems), text_field(row, label, path, line, problems)
        if t is None or lab is None:
            continue
        try:
            target = label_text(lab)
        except (KeyError, ValueError):
            problems.report(path, line, "bad_value", f"{label} {lab!r} is not a known label")
            continue
        yield example(t, target, _origin(path, line))


def bitext(source_path, target_path, problems: Problems) -> Iterator[dict]:
    """Line-aligned translation files: line i of `source_path` -> line i of `target_path`."""
    src, tgt = read_lines(source_path, problems), read_lines(target_path, problems)
    while True:  # not zip(): it would drop the first unpaired line, which the check below reports
        x, y = next(src, None), next(tgt, None)
        if x is None or y is None:
            break
        (line, a), (_, b) = x, y
        if a == _BAD_LINE or b == _BAD_LINE:
            continue
        if not a.strip() or not b.strip():
            problems.report(source_path if not a.strip() else target_path, line, "empty_text", "empty line")
            continue
        yield example(a.strip(), b.strip(), _origin(source_path, line))
    for path, extra in ((source_path, x), (target_path, y)):
        if extra is not None:
            problems.report(path, extra[0], "malformed", "the files are not line-aligned: this file is longer")


def generic(path, problems: Problems) -> Iterator[dict]:
    """The generic format: JSONL (or TSV with a header) with `query`, `positive` and optional
    `negatives` (a list of texts or of {"text", "title"}; in TSV a JSON list or one text),
    `task` (a query task) and `title` (of the positive)."""
    path = pathlib.Path(path)
    rows = read_jsonl(path, problems) if ".jsonl" in path.name else read_table(path, problems)
    for line, obj in rows:
        q, p = text_field(obj, "query", path, line, problems), text_field(obj, "positive", path, line, problems)
        title = text_field(obj, "title", path, line, problems, optional=True)
        task = text_field(obj, "task", path, line, problems, optional=True)
        if q is None or p is None or title is None or task is None:
            continue
        if task and task not in QUERY_TASKS:
            problems.report(path, line, "bad_value", f"task {task!r} is not one of {list(QUERY_TASKS)}")
            continue
        negs = _negatives(obj.get("negatives"), path, line, problems)
        if negs is None:
            continue
        yield example(q, p, _origin(path, line), title=title, task=task, negatives=[t for t, _ in negs],
                      negative_titles=[h for _, h in negs])


def _negatives(value, path, line, problems) -> list[tuple[str, str]] | None:
    if value is None or value == "":
        return []
    if isinstance(value, str):  # TSV: a JSON list, or one text
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else [value]
        except json.JSONDecodeError as e:
            problems.report(path, line, "malformed", f"negatives: invalid JSON list ({e.msg})")
            return None
    if not isinstance(value, list):
        problems.report(path, line, "malformed", f"negatives must be a list, got {type(value).__name__}")
        return None
    out = []
    for i, item in enumerate(value):
        text, title = (item, "") if isinstance(item, str) else (
            (item.get("text"), item.get("title") or "") if isinstance(item, dict) else (None, ""))
        if not isinstance(text, str) or not isinstance(title, str):
            problems.report(path, line, "malformed", f"negatives[{i}] must be a text or {{'text', 'title'}}")
            return None
        if not text.strip():
            problems.report(path, line, "empty_text", f"negatives[{i}] is empty")
            return None
        out.append((text.strip(), title.strip()))
    return out


# ----------------------------------------------------------------------------- training-only sets
def squad(path, problems: Problems, *, query: str = "question") -> Iterator[dict]:
    """SQuAD JSONL (title, context, question): question -> paragraph (`query="question"`; the
    article title is the document's title), or article title -> paragraph (`query="title"`, a
    pre-finetuning pair: the document then carries no title, which would give the answer away).
    With `query="title"` each paragraph is one example, however many questions it has."""
    path = pathlib.Path(path)
    seen: set[str] = set()
    for line, obj in read_jsonl(path, problems):
        field = functools.partial(text_field, obj, path=path, line=line, problems=problems)
        title, context = field("title"), field("context")
        if title is None or context is None:
            continue
        title = title.replace("_", " ")
        if query == "title":
            if context not in seen:
                seen.add(context)
                yield example(title, context, _origin(path, line))
            continue
        question = field("question")
        if question is not None:
            yield example(question, context, _origin(path, line), title=title)


def twitter_paraphrase(folder, problems: Problems) -> Iterator[dict]:
    """Twitter URL paraphrase corpus (line-aligned train.a.toks, train.b.toks, train.sim.txt):
    label-1 rows are pairs; a label-0 row with the same first sentence is the hard negative (the
    k-th positive of a sentence gets its k-th non-paraphrase, cyclically)."""
    folder = pathlib.Path(folder)
    paths = [folder / f"train.{n}" for n in ("a.toks", "b.toks", "sim.txt")]
    rows = zip(*(read_lines(p, problems) for p in paths))
    pos: list[tuple[int, str, str]] = []
    neg: dict[str, list[str]] = collections.defaultdict(list)
    for (line, a), (_, b), (_, label) in rows:
        if _BAD_LINE in (a, b, label):
            continue
        a, b, label = a.strip(), b.strip(), label.strip()
        if not a or not b or label not in ("0", "1"):
            problems.report(paths[2] if label not in ("0", "1") else paths[0], line, "bad_value",
                            f"expected two texts and a 0/1 label, got label {label!r}")
            continue
        if label == "1":
            pos.append((line, a, b))
        else:
            neg[a].append(b)
    used: collections.Counter[str] = collections.Counter()
    for line, a, b in pos:
        n = neg.get(a, [])
        negatives = [n[used[a] % len(n)]] if n else []
        used[a] += 1
        yield example(a, b, _origin(paths[0], line), negatives=negatives)


def docstring_code(path, problems: Problems) -> Iterator[dict]:
    """Docstring summary -> Python function (JSONL with docstring_summary, code)."""
    path = pathlib.Path(path)
    for line, obj in read_jsonl(path, problems):
        q = text_field(obj, "docstring_summary", path, line, problems)
        code = text_field(obj, "code", path, line, problems)
        if q is not None and code is not None:
            yield example(q, code, _origin(path, line))
