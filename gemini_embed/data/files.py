"""The file readers shared by training data (data/sources.py) and evaluation (eval/readers.py).

Lines, JSONL, CSV/TSV and BEIR folders, read with 1-based line numbers. Bad input (invalid UTF-8,
a malformed line, a missing column, an unknown id) goes to a `Problems` object: it raises a
`DataError` naming file, line and what is wrong (on_error="fail", what evaluation uses), or counts
and skips it (on_error="skip", the default of training-data preparation).
"""
from __future__ import annotations

import collections
import csv
import functools
import gzip
import json
import logging
import pathlib
from collections.abc import Iterator, Sequence

csv.field_size_limit(1 << 30)
log = logging.getLogger(__name__)

BAD_LINE = "\x00gemini_embed:undecodable\x00"  # stands in for a line already reported as bad UTF-8


class DataError(ValueError):
    """Bad input data; the message names the file and the 1-based line, then the reason (a short
    key such as `missing_field`) and the detail."""

    def __init__(self, path, line: int | None, reason: str, detail: str | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}" + (f": {detail}" if detail is not None else ""))
        self.path, self.line, self.reason = str(path), line, reason


class Problems:
    """The bad-input policy of one preparation: fail at the first problem, or skip and count.

    Skipped problems are counted per reason and per file; the first `max_logged` are logged with
    their location, and `summary()` gives the counts printed at the end of a preparation.
    """

    def __init__(self, on_error: str = "skip", max_logged: int = 10, error: type[DataError] = DataError):
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error, self.max_logged, self.error = on_error, max_logged, error
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()  # (file, reason) -> n
        self.first: list[str] = []

    def report(self, path, line: int | None, reason: str, detail: str) -> None:
        err = self.error(path, line, reason, detail)
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
                yield lineno, BAD_LINE


def read_jsonl(path, problems: Problems) -> Iterator[tuple[int, dict]]:
    """(line, object) for each non-empty line that holds a JSON object."""
    for lineno, line in read_lines(path, problems):
        if line == BAD_LINE or not line.strip():
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
               quoting: int | None = None, required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row dict) of a CSV/TSV. The header is the first line unless `names` are given; a
    header without every `required` column is reported (and nothing is read). Tab-separated files
    (.tsv/.txt/STS .csv with delimiter="\\t") are read without quoting."""
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
        if any(BAD_LINE in cell for cell in row) or not row:
            continue
        if header is None:
            header = [h.strip() for h in row]
            missing = [c for c in required if c not in header]
            if missing:
                problems.report(path, lineno, "missing_field", f"header {header} lacks column(s) {missing}")
                return
            continue
        if len(row) < len(header):
            problems.report(path, lineno, "malformed", f"{len(row)} fields, the header has {len(header)} "
                                                       f"({', '.join(header)})")
            continue
        yield lineno, dict(zip(header, row))  # extra trailing fields (STSb licence notes) are ignored
    if header is None and required:
        problems.report(path, 1, "empty", "no header line (one is required)")


def find_file(folder, stem: str, suffixes: Sequence[str] = ("",)) -> pathlib.Path:
    """`folder/<stem><suffix>` or the same with `.gz`, for the first suffix that exists."""
    folder = pathlib.Path(folder)
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.gz"):
            if candidate.exists():
                return candidate
    raise FileNotFoundError(f"{folder}: none of {', '.join(f'{stem}{s}[.gz]' for s in suffixes)} found")


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


def _str_id(obj: dict) -> dict:
    return {**obj, "_id": str(obj["_id"])} if isinstance(obj.get("_id"), int) else obj  # ids may be numbers


def read_beir(folder, split: str, problems: Problems, *, empty_documents: bool = False):
    """A BEIR folder: corpus.jsonl[.gz] (`_id`, `text`, optional `title`), queries.jsonl[.gz]
    (`_id`, `text`), qrels/SPLIT.tsv (`query-id`, `corpus-id`, `score`; a header line).

    Returns (corpus {id: (title, text)}, queries {id: text}, judgements [(line, qid, doc id, score)])
    in file order; a judgement that names an unknown query or document is reported.
    empty_documents: keep documents whose text is empty (evaluation embeds their title alone, as
    MTEB does: Cranfield has two); training reports and skips them."""
    folder = pathlib.Path(folder)
    corpus_path, queries_path = find_file(folder, "corpus.jsonl"), find_file(folder, "queries.jsonl")
    try:
        qrels_path = find_file(folder / "qrels", f"{split}.tsv")
    except FileNotFoundError:
        have = sorted(p.name.split(".")[0] for p in (folder / "qrels").glob("*.tsv*"))
        raise FileNotFoundError(f"{folder}/qrels: no {split}.tsv[.gz] (splits here: {', '.join(have) or 'none'})") from None
    corpus: dict[str, tuple[str, str]] = {}
    for line, obj in read_jsonl(corpus_path, problems):
        field = functools.partial(text_field, _str_id(obj), path=corpus_path, line=line, problems=problems)
        doc_id, text, title = field("_id"), field("text", optional=empty_documents), field("title", optional=True)
        if doc_id is not None and text is not None and title is not None:
            corpus[doc_id] = (title, text)
    queries: dict[str, str] = {}
    for line, obj in read_jsonl(queries_path, problems):
        field = functools.partial(text_field, _str_id(obj), path=queries_path, line=line, problems=problems)
        qid, text = field("_id"), field("text")
        if qid is not None and text is not None:
            queries[qid] = text  # metadata (SciFact's evidence labels) is never read
    judged: list[tuple[int, str, str, float]] = []
    for line, row in read_table(qrels_path, problems, required=("query-id", "corpus-id", "score")):
        qid, did = row["query-id"].strip(), row["corpus-id"].strip()
        try:
            score = float(row["score"])
        except ValueError:
            problems.report(qrels_path, line, "bad_value", f"score {row['score']!r} is not a number")
            continue
        if qid not in queries:
            problems.report(qrels_path, line, "unknown_id", f"query-id {qid!r} is not in {queries_path.name}")
        elif did not in corpus:
            problems.report(qrels_path, line, "unknown_id", f"corpus-id {did!r} is not in {corpus_path.name}")
        else:
            judged.append((line, qid, did, score))
    return corpus, queries, judged
