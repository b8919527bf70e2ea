"""Readers of the training formats, with bad-input handling.

Every reader yields examples as plain dicts (what the tfds builders store)::

  {"query": str, "positive": str, "title": str,            # title of the positive; "" = none
   "negatives": [str, ...], "negative_titles": [str, ...],  # hard negatives (may be empty)
   "task": str,                                             # query-side task; "" = the dataset's
   "score": float,                                          # graded gold similarity; NaN = none
   "origin": "file:line"}                                   # where the example came from

Bad input (a malformed line, a missing field, an empty text, an unknown id in qrels, invalid
UTF-8, an unparsable value) goes to a `Problems` object, which either raises `DataError` naming
file, line, field and value (on_error="fail") or counts and skips it (on_error="skip"). The line,
table and BEIR readers underneath are shared with evaluation: data/files.py.
"""
from __future__ import annotations

import collections
import functools
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from gemini_embed.data.files import (BAD_LINE, DataError, Problems, read_beir, read_jsonl,  # noqa: F401
                                     read_lines, read_table, text_field)
from gemini_embed.tokenize import QUERY_TASKS


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
def beir(folder, split: str, problems: Problems, *, min_score: float = 1.0) -> Iterator[dict]:
    """BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv): one example per qrels
    row with score >= min_score (title + text of the document); documents judged <= 0 for the
    same query become its hard negatives."""
    docs, queries, judged = read_beir(folder, split, problems)
    qrels_path = pathlib.Path(folder) / "qrels" / f"{split}.tsv"
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
        if a == BAD_LINE or b == BAD_LINE:
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
        if BAD_LINE in (a, b, label):
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


# Interface-string placeholders of the parallel data (its README): Fluent `{ $name }`, MediaWiki
# `$1` and `{{PLURAL:$1|...}}`, printf `%s` / `%1$s`, `{name}`, HTML tags. Translators keep them, so
# they pair trivially across languages; they are not language.
PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}|\{\s*\$[\w.-]+\s*\}|\{\w+\}|\$\d+|%(?:\d+\$)?[sdif@]|</?[a-zA-Z][^<>]*>")
PLACEHOLDER_MODES = ("normalise", "drop", "keep")


def _without_placeholders(text: str, mode: str) -> str | None:
    """`text` with placeholders removed ("normalise"), None if it has any ("drop"), or as is."""
    if mode == "keep" or not PLACEHOLDER.search(text):
        return text
    if mode == "drop":
        return None
    text = " ".join(PLACEHOLDER.sub(" ", text).split())
    return text if any(c.isalnum() for c in text) else None  # nothing but placeholders and punctuation


def parallel(folder, problems: Problems, *, placeholders: str = "normalise", temperature: float = 2.0,
             seed: int = 0) -> Iterator[dict]:
    """One dataset of the parallel data: every `<code>-en.tsv.gz` (header `en<TAB><code>`) of `folder`.

    The X side is the query, its English translation the positive (Tatoeba mines English for X).
    Language l with n_l pairs gets the share p_l ~ n_l^(1/temperature) of the dataset's N rows,
    as multilingual trainers sample: small languages are repeated, large ones subsampled (seeded),
    so one pass over the rows is the tempered mixture (temperature 1: as is; large: uniform).
    `placeholders`: see PLACEHOLDER_MODES; a pair left without text on either side is dropped.
    """
    if placeholders not in PLACEHOLDER_MODES:
        raise ValueError(f"placeholders must be one of {PLACEHOLDER_MODES}, got {placeholders!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    per_language: dict[str, list[dict]] = {}
    for path in sorted(pathlib.Path(folder).glob("*-en.tsv.gz")):
        code = path.name.removesuffix("-en.tsv.gz")
        rows = per_language.setdefault(code, [])
        for line, row in read_table(path, problems, required=("en", code)):
            x, en = (_without_placeholders(row[k].strip(), placeholders) for k in (code, "en"))
            if x and en:
                rows.append(example(x, en, _origin(path, line)))
    sizes = {code: len(rows) for code, rows in per_language.items() if rows}
    weight = {code: n ** (1.0 / temperature) for code, n in sizes.items()}
    total, norm = sum(sizes.values()), sum(weight.values())
    rng = np.random.default_rng(seed)
    for code in sorted(sizes):
        want, n = max(1, round(total * weight[code] / norm)), sizes[code]
        order = np.concatenate([rng.permutation(n) for _ in range(-(-want // n))])[:want]
        for i in order:
            yield per_language[code][int(i)]
