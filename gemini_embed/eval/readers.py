"""Readers for the evaluation file formats (JSONL, TSV/CSV with a header, BEIR folders).

Every reader fails with a `DataFormatError` that names the file and the 1-based line number of
the offending row (a missing column, a wrong field count, a value that does not parse).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

csv.field_size_limit(1 << 30)


class DataFormatError(ValueError):
    """Malformed evaluation data; the message names the file and line."""

    def __init__(self, path: str | pathlib.Path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


def open_text(path: str | pathlib.Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping `*.gz`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def find_file(folder: pathlib.Path, stem: str, suffixes: Sequence[str]) -> pathlib.Path:
    """`folder/stem<suffix>` (or with `.gz`) for the first suffix that exists."""
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.gz"):
            if candidate.exists():
                return candidate
    names = ", ".join(f"{stem}{s}[.gz]" for s in suffixes)
    raise FileNotFoundError(f"{folder}: none of {names} found")


def read_jsonl(path: str | pathlib.Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; every object must hold `required` keys."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(path, lineno, f"invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(path, lineno, "expected a JSON object")
            missing = [k for k in required if k not in obj]
            if missing:
                raise DataFormatError(path, lineno, f"missing field(s) {missing}")
            yield lineno, obj


def read_table(
    path: str | pathlib.Path,
    required: Sequence[str] = (),
    delimiter: str | None = None,
    quoting: int | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for a delimited file with a header line.

    The delimiter defaults to tab for `.tsv` and comma otherwise; TSV is read with
    `csv.QUOTE_NONE` (quotes are text, as in the STS files), CSV with standard quoting.
    A row with fewer fields than the header, or a header without a `required` column, fails.
    """
    path = pathlib.Path(path)
    plain = path.name[:-3] if path.name.endswith(".gz") else path.name
    is_tsv = plain.endswith(".tsv") or plain.endswith(".txt")
    delimiter = delimiter or ("\t" if is_tsv else ",")
    quoting = (csv.QUOTE_NONE if is_tsv else csv.QUOTE_MINIMAL) if quoting is None else quoting
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, 1, "empty file (a header line is required)") from None
        header = [h.strip().lstrip("\ufeff") for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataFormatError(path, 1, f"header {header} lacks column(s) {missing}")
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < len(header):
                raise DataFormatError(path, lineno, f"{len(row)} field(s), the header has {len(header)}")
            yield lineno, dict(zip(header, row))


def read_rows(path: str | pathlib.Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a `.jsonl`, `.tsv` or `.csv` file (optionally gzipped), by extension."""
    name = pathlib.Path(path).name.removesuffix(".gz")
    if name.endswith(".jsonl") or name.endswith(".json"):
        return read_jsonl(path, required)
    return read_table(path, required)


def parse_value(path, lineno: int, column: str, value: Any, convert: Callable[[Any], Any]):
    """`convert(value)`, or a DataFormatError naming the file, line and column."""
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, lineno, f"column {column!r}: cannot parse {value!r}") from None


def read_beir(folder: str | pathlib.Path, split: str = "test"):
    """A BEIR folder: (corpus {id: (title, text)}, queries {id: text}, qrels {qid: {docid: int}}).

    Files: `corpus.jsonl[.gz]` (`_id`, `text`, optional `title`), `queries.jsonl[.gz]` (`_id`,
    `text`), `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`; header line). Qrels that name
    an unknown query or document are errors.
    """
    folder = pathlib.Path(folder)
    corpus_path = find_file(folder, "corpus", [".jsonl"])
    corpus = {}
    for _, obj in read_jsonl(corpus_path, ["_id", "text"]):
        corpus[str(obj["_id"])] = (obj.get("title") or "", obj["text"] or "")
    queries_path = find_file(folder, "queries", [".jsonl"])
    queries = {str(o["_id"]): o["text"] for _, o in read_jsonl(queries_path, ["_id", "text"])}
    qrels_path = find_file(folder / "qrels", split, [".tsv"])
    qrels: dict[str, dict[str, int]] = {}
    for lineno, row in read_table(qrels_path, ["query-id", "corpus-id", "score"]):
        qid, did = row["query-id"], row["corpus-id"]
        score = parse_value(qrels_path, lineno, "score", row["score"], lambda v: int(float(v)))
        if qid not in queries:
            raise DataFormatError(qrels_path, lineno, f"query id {qid!r} is not in {queries_path.name}")
        if did not in corpus:
            raise DataFormatError(qrels_path, lineno, f"corpus id {did!r} is not in {corpus_path.name}")
        qrels.setdefault(qid, {})[did] = score
    return corpus, queries, qrels
