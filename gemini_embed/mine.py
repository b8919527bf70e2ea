"""The mine command: hard negatives for a BEIR folder's train queries, as generic training JSONL.

    python -m gemini_embed.mine --model all-minilm-l6-v2 --beir ../shared/data/scifact --split train \\
        --task "fact checking" --output runs/mining/scifact_plain.jsonl --top_k 30 --rank_window 5:30
    python -m gemini_embed.mine ... --rescore gemma3-270m --rrf_k 60      # + LLM query likelihood

--rank_window START:END are 1-based retrieval ranks, both included (END <= --top_k). Without
--rescore the best-ranked non-positive candidates of the window are the negatives; with it the
candidates are fused by RRF of embedding and log p(query | passage) order, and the lowest-fused
become negatives. Restarting an interrupted command with the same arguments resumes it.
Writes OUTPUT, OUTPUT's stem + .details.jsonl (per query ids, ranks, scores) and + .stats.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from gemini_embed import runtime


def parse_window(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rank_window {text!r} is not START:END (e.g. 5:30)") from None
    return lo, hi


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--model", required=True, help="first-stage embedder: registered name, folder or workdir")
    ap.add_argument("--beir", required=True, help="BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv)")
    ap.add_argument("--split", default="train", help="qrels split whose queries are mined")
    ap.add_argument("--allow_test_split", action="store_true",
                    help="mine a split other than train (it leaks evaluation queries into training)")
    ap.add_argument("--output", required=True, help="training file to write (JSONL, the generic format)")
    ap.add_argument("--task", default="search result", help="query task written to each record (SciFact: 'fact checking')")
    ap.add_argument("--top_k", type=int, default=30, help="neighbours retrieved per query")
    ap.add_argument("--rank_window", type=parse_window, default=(5, 30),
                    help="LO:HI, 1-based retrieval ranks (inclusive) a negative may come from")
    ap.add_argument("--num_negatives", type=int, default=3, help="hard negatives kept per query")
    ap.add_argument("--rescore", default=None, help="LLM scorer: gemma3-270m or a Gemma 3 .gguf path")
    ap.add_argument("--rrf_k", type=float, default=60.0, help="reciprocal-rank fusion constant (with --rescore)")
    ap.add_argument("--max_passage_tokens", type=int, default=128, help="LLM scorer: passage tokens kept")
    ap.add_argument("--max_query_tokens", type=int, default=64, help="LLM scorer: query tokens scored")
    ap.add_argument("--llm_batch_size", type=int, default=16, help="LLM scorer: pairs per batch")
    ap.add_argument("--max_queries", type=int, default=None, help="only the first N queries (qrels order)")
    ap.add_argument("--query_batch", type=int, default=16, help="queries per resumable chunk")
    ap.add_argument("--batch_size", type=int, default=64, help="embedding batch size")
    ap.add_argument("--embed_cache", default=None, help="folder caching embeddings across mining runs")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    ap.add_argument("--keep_progress", action="store_true", help="keep OUTPUT.progress/ after merging")
    args = ap.parse_args(argv)
    runtime.setup_command()

    if args.split != "train" and not args.allow_test_split:
        ap.error(f"refusing --split {args.split!r}: mined negatives are training data and must come from train "
                 f"queries only; pass --allow_test_split to do it anyway")
    from gemini_embed.llm.mining import MiningConfig, mine
    from gemini_embed.llm.scoring import QueryLikelihoodScorer
    from gemini_embed.eval.readers import read_beir

    try:
        config = MiningConfig(top_k=args.top_k, rank_window=args.rank_window, num_negatives=args.num_negatives,
                              rrf_k=args.rrf_k, task=args.task or None, query_batch=args.query_batch)
    except ValueError as e:
        ap.error(str(e))
    corpus, queries, qrels = read_beir(args.beir, args.split)
    if args.max_queries is not None:
        if args.max_queries < 1:
            ap.error(f"--max_queries must be >= 1, got {args.max_queries}")
        qrels = dict(list(qrels.items())[:args.max_queries])
    scorer = None
    if args.rescore:
        path = None if args.rescore.lower() == "gemma3-270m" else args.rescore
        if path is not None and not os.path.isfile(path):
            ap.error(f"--rescore {args.rescore!r}: neither 'gemma3-270m' nor an existing .gguf file")
        scorer = QueryLikelihoodScorer(path, max_passage_tokens=args.max_passage_tokens,
                                       max_query_tokens=args.max_query_tokens, batch_size=args.llm_batch_size,
                                       name=os.path.basename(args.rescore))

    import gemini_embed as ge

    embedder = ge.Embedder.from_pretrained(args.model)
    stats = mine(embedder, queries, corpus, qrels, args.output, config=config, scorer=scorer,
                 embed_batch_size=args.batch_size, embed_cache=args.embed_cache,
                 overwrite=args.overwrite, keep_progress=args.keep_progress)
    stats["command"] = sys.argv if argv is None else ["python", "-m", "gemini_embed.mine", *argv]
    print(json.dumps({k: v for k, v in stats.items() if k != "settings"}, indent=1))
    return stats


if __name__ == "__main__":
    main()
