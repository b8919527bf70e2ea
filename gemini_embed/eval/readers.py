"""Readers for the evaluation file formats (JSONL, TSV/CSV with a header, BEIR folders): the
shared readers of data/files.py in fail-fast mode.

Every reader fails with a `DataFormatError` that names the file and the 1-based line number of
the offending row (a missing column, a wrong field count, a value that does not parse, bad UTF-8).
"""
from __future__ import annotations

import gzip
import io
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gemini_embed.data import files
from gemini_embed.data.files import DataError, Problems


class DataFormatError(DataError):
    """Malformed evaluation data; the message names the file and line. Evaluation fails at the
    first problem: a score over silently skipped rows would not be the benchmark's."""


def _fail() -> Problems:
    return Problems("fail", error=DataFormatError)


def open_text(path: str | pathlib.Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping `*.gz`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_jsonl(path: str | pathlib.Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; every object must hold `required` keys."""
    for lineno, obj in files.read_jsonl(path, _fail()):
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataFormatError(path, lineno, f"missing field(s) {missing}")
        yield lineno, obj


def read_table(path: str | pathlib.Path, required: Sequence[str] = (), delimiter: str | None = None,
               quoting: int | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for a delimited file with a header line.

    The delimiter defaults to tab for `.tsv`/`.txt` and comma otherwise; TSV is read with
    `csv.QUOTE_NONE` (quotes are text, as in the STS files), CSV with standard quoting. A row
    with fewer fields than the header, a header without a `required` column, or a line that is
    not UTF-8 fails.
    """
    return files.read_table(path, _fail(), delimiter=delimiter, quoting=quoting, required=tuple(required))


def find_file(folder: pathlib.Path, stem: str, suffixes: Sequence[str]) -> pathlib.Path:
    """`folder/stem<suffix>` (or with `.gz`) for the first suffix that exists."""
    return files.find_file(folder, stem, suffixes)


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
    corpus, queries, judged = files.read_beir(folder, split, _fail(), empty_documents=True)
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, did, score in judged:
        qrels.setdefault(qid, {})[did] = int(score)
    return corpus, queries, qrels
