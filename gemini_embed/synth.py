"""The synth command: training pairs written by the LLM (Gemma 3 in causal mode, few-shot prompts).

    python -m gemini_embed.synth --model gemma3-270m --kind query --n 1000 --output runs/synth/squad_queries.jsonl \\
        --corpus squad:../shared/data/squad_v1.1_train/squad_v1.1_train.jsonl.gz
    python -m gemini_embed.synth --model gemma3-270m --corpus lines:sentences.txt --kind paraphrase --n 500 \\
        --output runs/synth/paraphrases.jsonl

--kind query writes a question for each passage (`query` = the question, `positive` = the
passage); --kind paraphrase a paraphrase of each sentence (`query` = the sentence, `positive` =
the paraphrase). The few-shot examples come from training splits only (SQuAD v1.1 train, MRPC
train). OUTPUT is generic training JSONL (`--config.data.sources=OUTPUT`), each row with its
provenance (generator, template, seed, sampling settings). The same command again resumes: it
skips the items already written (and refuses an OUTPUT written with other settings).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys

from gemini_embed import runtime


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--model", default="gemma3-270m", help="generator: gemma3-270m or a Gemma 3 .gguf path")
    ap.add_argument("--corpus", required=True, help="FORMAT:PATH with FORMAT beir, squad, jsonl or lines")
    ap.add_argument("--kind", required=True, choices=["query", "paraphrase"], help="what to write for each item")
    ap.add_argument("--n", type=int, required=True, help="items to write for (a seeded sample of the corpus)")
    ap.add_argument("--output", required=True, help="generic training JSONL to write (appended on resume)")
    ap.add_argument("--shots", type=int, default=3, help="few-shot examples in each prompt (each its own draw)")
    ap.add_argument("--seed", type=int, default=0, help="sample of items, of examples, and of the sampling")
    ap.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
    ap.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling mass")
    ap.add_argument("--max_new_tokens", type=int, default=48, help="tokens generated per item at most")
    ap.add_argument("--batch_size", type=int, default=8, help="prompts decoded together")
    ap.add_argument("--max_prompt_tokens", type=int, default=768, help="longer prompts lose their start")
    ap.add_argument("--data", default=None,
                    help="data root of the few-shot examples (default $GEMINI_EMBED_DATA or ../shared/data)")
    ap.add_argument("--human_counterpart", default=None,
                    help="with a squad: corpus, also write this file: the same paragraphs with SQuAD's human questions")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    args = ap.parse_args(argv)
    runtime.setup_command()

    from gemini_embed.data.builders import data_root
    from gemini_embed.data.files import Problems
    from gemini_embed.llm.decoding import Generator
    from gemini_embed.llm.synthesis import few_shot_examples, human_counterpart, read_corpus, synthesize

    if args.human_counterpart and not (args.kind == "query" and args.corpus.startswith("squad:")):
        ap.error("--human_counterpart needs --kind query and a squad: corpus")
    if args.n < 1 or args.shots < 0:
        ap.error(f"--n must be >= 1 and --shots >= 0, got {args.n} and {args.shots}")
    path = None if args.model.lower() == "gemma3-270m" else args.model
    if path is not None and not os.path.isfile(path):
        ap.error(f"--model {args.model!r}: neither 'gemma3-270m' nor an existing .gguf file")
    problems = Problems()
    try:
        items = list(read_corpus(args.corpus, problems))
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    if not items:
        ap.error(f"--corpus {args.corpus!r} has no items{': ' + problems.summary() if problems.total else ''}")
    items = random.Random(args.seed).sample(items, min(args.n, len(items)))
    examples = few_shot_examples(args.kind, args.data or data_root(), seed=args.seed)
    if args.overwrite and os.path.exists(args.output):
        os.remove(args.output)
    generator = Generator(path, batch_size=args.batch_size, max_prompt_tokens=args.max_prompt_tokens)
    try:
        counts = synthesize(generator, items, args.kind, args.output, examples=examples, shots=args.shots,
                            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = {"output": args.output, "items": len(items), **counts, "compiled_shapes": len(generator.shapes_seen)}
    if args.human_counterpart:
        summary["human_counterpart"] = {"file": args.human_counterpart,
                                        "rows": human_counterpart(args.output, args.corpus[6:], args.human_counterpart)}
    if problems.total:
        summary["corpus_problems"] = problems.by_reason()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
