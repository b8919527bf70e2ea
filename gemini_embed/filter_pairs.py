"""The filter command: keep the synthetic pairs that pass dedup, LLM likelihood and round-trip tests.

    python -m gemini_embed.filter_pairs --input runs/synth/squad_queries.jsonl \\
        --output runs/synth/squad_queries.kept.jsonl --min_loglik -3 --round_trip_k 5 --embedder all-minilm-l6-v2

Tests (gemini_embed/llm/filtering.py), each row dropped by the first it fails: a near-duplicate
query (normalised text, or embedding cosine >= --dedup_cosine); mean log p(query token | passage)
under the LLM below --min_loglik; its own passage not in the embedder's top --round_trip_k among
the file's distinct passages. Writes OUTPUT (the kept rows, their scores added to provenance),
OUTPUT's stem + .stats.json (kept fraction, drops by test, histograms) and + .loglik.png.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from gemini_embed import runtime


def _off(value: str):
    return None if value.lower() in ("none", "off") else float(value)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--input", required=True, help="generic training JSONL (what the synth command writes)")
    ap.add_argument("--output", required=True, help="the kept rows (JSONL)")
    ap.add_argument("--min_loglik", type=_off, default=-3.0, help="per-token LLM log-likelihood threshold; off: no test")
    ap.add_argument("--round_trip_k", type=_off, default=5, help="own passage within the top k; off: no test")
    ap.add_argument("--dedup_cosine", type=_off, default=0.95, help="query cosine of a near-duplicate; off: text only")
    ap.add_argument("--embedder", default="all-minilm-l6-v2", help="first-stage embedder (name, folder or workdir)")
    ap.add_argument("--scorer", default="gemma3-270m", help="LLM scorer: gemma3-270m or a Gemma 3 .gguf path")
    ap.add_argument("--max_passage_tokens", type=int, default=256, help="LLM scorer: passage tokens kept")
    ap.add_argument("--batch_size", type=int, default=64, help="embedding batch size")
    args = ap.parse_args(argv)
    runtime.setup_command()

    from gemini_embed.llm.filtering import FilterConfig, filter_rows, plot_histogram, read_rows

    try:
        config = FilterConfig(min_loglik=args.min_loglik,
                              round_trip_k=None if args.round_trip_k is None else int(args.round_trip_k),
                              dedup_cosine=args.dedup_cosine)
        rows = read_rows(args.input)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    if not rows:
        ap.error(f"--input {args.input}: no rows")
    scorer = embedder = None
    if config.min_loglik is not None:
        from gemini_embed.llm.scoring import QueryLikelihoodScorer
        scorer = QueryLikelihoodScorer(None if args.scorer.lower() == "gemma3-270m" else args.scorer,
                                       max_passage_tokens=args.max_passage_tokens)
    if config.round_trip_k or config.dedup_cosine:
        from gemini_embed.embed import Embedder
        embedder = Embedder.from_pretrained(args.embedder)
    kept, stats = filter_rows(rows, config, scorer=scorer, embedder=embedder, batch_size=args.batch_size)
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    stats = {"input": args.input, "output": args.output, **stats}
    out.with_name(out.stem + ".stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    plot_histogram(stats, out.with_name(out.stem + ".loglik.png"))
    print(json.dumps({k: stats[k] for k in ("output", "rows", "kept", "kept_fraction", "dropped")}))
    return stats


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
