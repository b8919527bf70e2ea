"""The evaluate command: MTEB-style scores of a model on real data, as JSON, Markdown and a plot.

    python -m gemini_embed.evaluate --model gemma3-270m --tasks quick --output runs/eval/results.json
    python -m gemini_embed.evaluate --model all-minilm-l6-v2 --tasks STSBenchmark,SciFact --output r.json
    python -m gemini_embed.evaluate --model gemma3-270m --tasks sts --dims 128,256,768 --output r.json

--model: a registered name, a local model folder, or a training workdir. --tasks: task names,
groups (quick, sts, retrieval, ..., all) or TYPE:PATH for your own data, comma-separated
(e.g. retrieval:my_beir,sts:pairs.tsv). Own-data formats (docs/evaluation.md):
  retrieval:DIR            BEIR folder: corpus.jsonl[.gz] (_id, text, title?), queries.jsonl
                           (_id, text), qrels/<--qrels_split>.tsv (query-id, corpus-id, score; header)
  sts:FILE                 TSV sentence1, sentence2, score (header)
  pair_classification:FILE TSV sentence1, sentence2, label 0/1 (header)
  bitext:FILE              TSV sentence1, sentence2 (header): line i translates line i
  classification:DIR       train and test files (CSV, TSV or JSONL) with text, label
  clustering:FILE          JSONL with text, label
Writes OUTPUT (JSON), OUTPUT with .md (a table per task, per task type, and means) and, with
several --dims, OUTPUT with .png (score vs dimension: the Matryoshka curve).

OUTPUT is rewritten after every task ("complete": false until the last): a run that fails or is
killed keeps the finished tasks, and the same command again evaluates only the missing ones (when
the model, its params and the dims are the same).

Embeddings are cached on disk per model (name + hash of config and params), task, side, prompt
and dim (--cache_dir, default $GEMINI_EMBED_CACHE or ~/.cache/gemini_embed/embeddings): a second
run reads them back instead of embedding again. --no_cache turns that off.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from gemini_embed import quantize, runtime


def markdown_table(results: dict[str, dict], model: str) -> str:
    lines = [f"# {model}", "", "| task | type | metric | score | n | seconds |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(f"| {key} | {r['type']} | {r['metric']} | {r['main_score']:.4f} | {r['num_samples']} "
                     f"| {r['seconds']:.1f} |")
    by_type: dict[str, list[float]] = {}
    for r in results.values():
        by_type.setdefault(r["type"], []).append(r["main_score"])
    lines += ["", "| task type | tasks | mean |", "|---|---|---|"]
    lines += [f"| {t} | {len(v)} | {np.mean(v):.4f} |" for t, v in by_type.items()]
    lines += ["", f"Mean over tasks: {np.mean([r['main_score'] for r in results.values()]):.4f}; "
                  f"mean over task types: {np.mean([np.mean(v) for v in by_type.values()]):.4f}"]
    return "\n".join(lines) + "\n"


def plot_mrl(results: dict[str, dict], dims: list[int], path: pathlib.Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = sorted({k.rsplit("@", 1)[0] for k in results})
    for name in names:
        ax.plot(dims, [results[f"{name}@{d}"]["main_score"] for d in dims], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set(xlabel="embedding dimension (Matryoshka prefix)", ylabel="main score", title=model)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RESULT_FIELDS = ("main_score", "metric", "scores", "num_samples", "seconds", "type", "dims", "precision")
CALIBRATION_TEXTS = 1000  # half SQuAD train questions, half paragraphs: training-only text, both sides


def calibration_embeddings(model, data: str | None, n: int = CALIBRATION_TEXTS) -> np.ndarray:
    """The model's saved calibration set, else the embeddings of n/2 SQuAD train questions (as
    queries) and n/2 paragraphs (as documents), evenly spread: int8/uint8 ranges for --precision."""
    if model.calibration is not None:
        return model.calibration
    from gemini_embed.data import builders, sources
    from gemini_embed.data.files import Problems

    path = builders.data_root(data) / "squad_v1.1_train" / "squad_v1.1_train.jsonl.gz"
    rows = list(sources.squad(path, Problems("fail")))
    questions = [r["query"] for r in rows[::max(1, len(rows) // (n // 2))]][:n // 2]  # spread over all articles
    paragraphs = list(dict.fromkeys(r["positive"] for r in rows))
    paragraphs = paragraphs[::max(1, len(paragraphs) // (n - n // 2))][:n - n // 2]
    return np.concatenate([model.embed(questions, task="question answering"),
                           model.embed(paragraphs, task="document")])


def finished_tasks(out: pathlib.Path, settings: dict) -> dict[str, dict]:
    """The task results already in `out` from a run of the same model and settings (a rerun of an
    interrupted or failed command keeps them); {} when there is none or it differs."""
    if not out.exists():
        return {}
    try:
        old = json.loads(out.read_text())
    except json.JSONDecodeError:
        return {}
    if any(old.get(k) != v for k, v in settings.items()):
        return {}
    return {k: {**r, "task": k.split("@")[0], "use_prompts": settings["uses_prompts"]} for k, r in old["tasks"].items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--model", required=True, help="registered name, local model folder, .gguf, workdir or export")
    ap.add_argument("--tasks", default="quick", help="task names, families, groups or TYPE:PATH, comma-separated")
    ap.add_argument("--qrels_split", default="test",
                    help="qrels/<split>.tsv of own retrieval folders (retrieval:DIR); registered tasks keep theirs")
    ap.add_argument("--dims", default=None, help="comma-separated Matryoshka dims, e.g. 128,256,768")
    ap.add_argument("--precision", default="float32", choices=quantize.PRECISIONS,
                    help="score quantised embeddings; int8/uint8 ranges from the model's saved calibration "
                         f"set, else from {CALIBRATION_TEXTS} SQuAD train texts")
    ap.add_argument("--batch_size", type=int, default=64, help="texts per embedding call")
    ap.add_argument("--max_length", type=int, default=None, help="tokens kept per text (default: the model's)")
    ap.add_argument("--no_projection", action="store_true",
                    help="drop the model's projection head (e.g. gemma3-270m's untrained random one): "
                         "evaluate the mean-pooled encoder output itself")
    ap.add_argument("--data", default=None, help="benchmark data root (default $GEMINI_EMBED_DATA or ../shared/data)")
    ap.add_argument("--output", required=True, help="results JSON; .md (and .png with several --dims) beside it")
    ap.add_argument("--cache_dir", default=None,
                    help="embedding cache (default $GEMINI_EMBED_CACHE or ~/.cache/gemini_embed/embeddings)")
    ap.add_argument("--no_cache", action="store_true", help="embed everything, read and write no cache")
    args = ap.parse_args(argv)
    runtime.setup_command()

    import gemini_embed as ge
    from gemini_embed.data.files import DataError
    from gemini_embed.eval import runner
    from gemini_embed.eval import tasks as tasks_lib
    from gemini_embed.eval.cache import EmbeddingCache, model_fingerprint
    from gemini_embed.eval.report import format_table

    try:
        task_list = tasks_lib.resolve_tasks(args.tasks, qrels_split=args.qrels_split)
    except (KeyError, ValueError) as e:  # an unknown name or type: before any model is loaded
        raise SystemExit(f"error: --tasks: {e.args[0]}") from None
    dims = [int(d) for d in args.dims.split(",")] if args.dims else None
    overrides = {} if args.max_length is None else {"max_length": args.max_length}
    if args.no_projection:
        overrides["projection"] = None
    start = time.perf_counter()
    model = ge.Embedder.from_pretrained(args.model, **overrides)
    load_s = time.perf_counter() - start
    if model.provenance:
        from gemini_embed.train.provenance import summary

        print(f"{args.model}:\n  " + summary(model.provenance).replace("\n", "\n  "), flush=True)

    def encode(texts, task=None, titles=None):
        return model.embed(texts, task=task, titles=titles, batch_size=args.batch_size)

    fingerprint = model_fingerprint(model)
    cache = None if args.no_cache else EmbeddingCache(fingerprint, model.dim, args.cache_dir)
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"model_fingerprint": fingerprint, "dims": dims, "precision": args.precision,
                "uses_prompts": model.uses_prompts}
    calibration = calibration_embeddings(model, args.data) if args.precision in ("int8", "uint8") else None
    done = finished_tasks(out, settings)
    if done:
        print(f"{out}: {len(done)} task(s) already evaluated with this model and settings, kept: {', '.join(done)}")

    def report_of(results: dict, complete: bool) -> dict:
        return {"model": args.model, "provenance": model.provenance, **settings, "complete": complete,
                "load_seconds": round(load_s, 2), "seconds": round(time.perf_counter() - start, 2),
                "compilations": model.num_compilations,
                "cache": None if cache is None else {"dir": str(cache.dir), "hits": cache.hits, "misses": cache.misses},
                "tasks": {k: {f: r[f] for f in RESULT_FIELDS} for k, r in results.items()}}

    def save(results: dict, complete: bool = False) -> dict:
        report = report_of(results, complete)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=float))
        tmp.replace(out)  # whole or not at all: a kill mid-write keeps the previous file
        return report

    try:  # finished tasks are already saved (on_result): a bad file ends the run with one line
        results = runner.evaluate(encode, task_list, data_root=args.data, use_prompts=model.uses_prompts,
                                  dims=dims if dims is None or len(dims) > 1 else dims[0], precision=args.precision,
                                  calibration=calibration, cache=cache, done=done, on_result=save)
    except (FileNotFoundError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    report = save(results, complete=True)
    out.with_suffix(".md").write_text(markdown_table(results, args.model))
    if dims and len(dims) > 1:
        plot_mrl(results, dims, out.with_suffix(".png"), args.model)
    print(format_table(results))
    if cache is not None:
        print(f"embedding cache {cache.dir}: {cache.hits} read, {cache.misses} embedded")
    print(f"wrote {out} and {out.with_suffix('.md')} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
