"""The prepared store: each DatasetSpec prepared once into a tensorflow-datasets builder stored as
`array_record` (readable without TensorFlow) under the prepared-data directory::

  DATA_DIR/embedding_pairs/<dataset>-<fingerprint>/<version>/   tfds files, one per split
  DATA_DIR/embedding_pairs/<dataset>-<fingerprint>.report.json   counts and skipped bad input

The fingerprint (`DatasetSpec.fingerprint`) covers the input files (path, size, mtime), the reader
options and the builder version, so a changed file is prepared again instead of served stale. A
file lock makes several processes (hosts on one machine) prepare a dataset once.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import io
import json
import os
import pathlib

from gemini_embed.data import sources as src
from gemini_embed.data.builders import BUILDER_VERSION, DatasetSpec


def default_prepared_dir() -> pathlib.Path:
    from gemini_embed.runtime import CACHE_DIR

    return pathlib.Path(os.environ.get("GEMINI_EMBED_TFDS") or CACHE_DIR / "tfds")


@functools.cache
def _builder_class():
    import numpy as np
    import tensorflow_datasets as tfds

    class EmbeddingPairs(tfds.core.GeneratorBasedBuilder):
        """(query, positive[, negatives]) examples of one DatasetSpec; one builder config per spec."""

        VERSION = tfds.core.Version(BUILDER_VERSION)

        def __init__(self, *, spec: DatasetSpec, problems: src.Problems, **kwargs):
            self._spec, self._problems = spec, problems
            self.counts: dict[str, collections.Counter] = {}
            self.last_origin = "none yet"  # where a failure happened, for the error message
            config = tfds.core.BuilderConfig(name=f"{spec.name}-{spec.fingerprint()}", description=spec.description)
            super().__init__(config=config, file_format="array_record", **kwargs)

        def _info(self):
            text = tfds.features.Text()
            features = tfds.features.FeaturesDict({
                "query": text, "positive": text, "title": text, "task": text, "origin": text,
                "negatives": tfds.features.Sequence(text), "negative_titles": tfds.features.Sequence(text),
                "num_negatives": np.int32, "score": np.float32})
            return tfds.core.DatasetInfo(builder=self, description=self._spec.description, features=features)

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in self._spec.readers}

        def _generate_examples(self, split):
            count = self.counts.setdefault(split, collections.Counter())
            for i, ex in enumerate(self._spec.readers[split](self._problems)):
                self.last_origin = f"{split} example {i}, from {ex['origin']}"
                count["examples"] += 1
                count["with_negatives"] += bool(ex["negatives"])
                yield i, {**ex, "num_negatives": len(ex["negatives"])}

    # tfds looks for checksum files next to a builder's module via importlib_resources (absent
    # here, and nothing is downloaded): a one-part module name makes it skip that lookup.
    EmbeddingPairs.__module__ = "gemini_embed_data"
    return EmbeddingPairs


def prepared_path(spec: DatasetSpec, data_dir) -> pathlib.Path:
    return pathlib.Path(data_dir) / "embedding_pairs" / f"{spec.name}-{spec.fingerprint()}"


def prepare(spec: DatasetSpec, data_dir=None, on_error: str = "skip", verbose: bool = True) -> dict:
    """Prepares `spec` (all its splits) into `data_dir` unless already there; returns its report
    {"dataset", "splits": {split: {"examples", "with_negatives"}}, "skipped": {reason: n}, ...},
    which is printed (`verbose`) whether prepared now or before."""
    if on_error not in ("skip", "fail"):  # checked first: a prepared dataset would not look at it
        raise ValueError(f"data.on_error must be 'skip' or 'fail', got {on_error!r}")
    report = _prepare(spec, data_dir, on_error)
    if verbose:
        print(format_report(report), flush=True)
    return report


def _prepare(spec: DatasetSpec, data_dir, on_error: str) -> dict:
    data_dir = pathlib.Path(data_dir or default_prepared_dir())
    base = prepared_path(spec, data_dir)
    report_path = base.with_name(base.name + ".report.json")
    if report_path.exists():
        return _reuse(report_path, on_error)
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_name(base.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be preparing it: wait, then reuse
        if report_path.exists():
            return _reuse(report_path, on_error)
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        problems = src.Problems(on_error)
        builder = _builder_class()(spec=spec, problems=problems, data_dir=str(data_dir))
        try:
            # tfds prints "Downloading and preparing dataset ..." to stdout whatever its log level,
            # though nothing downloads: the line after this (our report) says what was prepared
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare()
        except src.DataError:
            raise
        except Exception as e:  # say which dataset failed; the reader's own errors already say where
            empty = [s for s in spec.readers if not builder.counts.get(s, {}).get("examples")]
            if empty:  # tfds' own message ("No examples were yielded") names neither the file nor why
                raise src.DataError(spec.files[0] if spec.files else spec.name, None, "no_examples",
                                    f"{spec.description}: split {empty[0]} has no usable example; "
                                    f"{problems.summary()}") from None
            raise RuntimeError(f"preparing training dataset {spec.name} ({spec.description}) failed after "
                               f"{builder.last_origin}: {type(e).__name__}: {e}") from e
        report = {"dataset": spec.name, "description": spec.description, "path": str(builder.data_dir),
                  "splits": {s: dict(builder.counts.get(s) or {"examples": builder.info.splits[s].num_examples})
                             for s in spec.readers}, "skipped": problems.by_reason(),
                  "skipped_by_file": {f"{p} ({r})": n for (p, r), n in sorted(problems.counts.items())},
                  "first_skipped": problems.first, "on_error": on_error}
        tmp = report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(report_path)  # written last: its presence marks the preparation complete
    return report


def _reuse(report_path: pathlib.Path, on_error: str) -> dict:
    report = json.loads(report_path.read_text())
    if on_error == "fail" and report["skipped"]:  # prepared earlier in skip mode: fail mode must not hide it
        raise src.DataError(report_path, None, "bad input", f"{report['dataset']} was prepared with "
                            f"on_error='skip' and skipped {report['skipped']}; first: {report['first_skipped'][:3]}")
    return report


def format_report(report: dict) -> str:
    splits = ", ".join(f"{s} {c.get('examples', 0):,}" + (f" ({c['with_negatives']:,} with negatives)"
                                                           if c.get("with_negatives") else "")
                       for s, c in report["splits"].items())
    skipped = report["skipped"]
    bad = (f"; skipped {sum(skipped.values())} bad input(s): " + ", ".join(f"{r} {n}" for r, n in skipped.items())
           if skipped else "; no bad input")
    lines = [f"prepared {report['dataset']}: {splits}{bad} ({report['path']})"]
    lines += [f"  {k}: {n}" for k, n in report.get("skipped_by_file", {}).items()]
    return "\n".join(lines)


def data_source(spec: DatasetSpec, split: str, data_dir=None):
    """The prepared split as a random-access tfds data source (ArrayRecordDataSource)."""
    import tensorflow_datasets as tfds

    data_dir = pathlib.Path(data_dir or default_prepared_dir())
    name = f"embedding_pairs/{spec.name}-{spec.fingerprint()}"
    return tfds.data_source(name, split=split, data_dir=str(data_dir))
