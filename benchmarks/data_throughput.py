"""Throughput of the input pipeline alone (examples/s) vs what the train step consumes.

    python benchmarks/data_throughput.py [--config experiments/gemma3_270m_finetune.py] [--batches 200]
                                         [--threads 0,2] [--negatives 0,1] [--step_seconds 25,40]

Builds the config's pipeline (its sources, prepared on first use; its tokenizer: the real Gemma 3
SentencePiece model for the 270M config; its batch size and lengths) and times `--batches` global
batches after a warm-up, for each number of reader threads and hard negatives per example. The
train step's consumption is global batch / step seconds: the README measures the 270M step at
~25-40 s for 16 x (48 + 128) tokens on this 2-core CPU, i.e. 0.4-0.64 examples/s. Prints one JSON
line per setting and the ratio pipeline / step (> 1: the pipeline is not the bottleneck).
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "experiments" / "gemma3_270m_finetune.py"))
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--threads", default="0,2")
    ap.add_argument("--negatives", default="0,1")
    ap.add_argument("--step_seconds", default="25,40", help="train-step seconds to compare with (min,max)")
    args = ap.parse_args()

    sys.path.insert(0, str(pathlib.Path(args.config).parent))
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()

    from gemini_embed.data import pipeline

    name = config.model.name
    tokenizer = _tokenizer(name)
    uses_prompts = name != "all-minilm-l6-v2"
    b = config.train.global_batch_size
    lo, hi = (float(x) for x in args.step_seconds.split(","))
    for negatives in (int(x) for x in args.negatives.split(",")):
        data = copy.deepcopy(config.data)
        data.num_negatives = negatives
        if negatives:  # a source with hard negatives, so that they are really tokenised
            data.sources = data.sources + ",snli-triplets-validation"
        for threads in (int(x) for x in args.threads.split(",")):
            data.threads = threads
            pipe = pipeline.from_config(data, b, tokenizer, uses_prompts=uses_prompts, seed=0, verbose=False)
            it = pipe.iterator()
            for _ in range(5):  # warm-up: thread start, first reads
                next(it)
            t = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            dt = time.perf_counter() - t
            rate = args.batches * b / dt
            print(json.dumps({
                "model": name, "sources": data.sources, "global_batch": b, "query_len": data.query_len,
                "positive_len": data.positive_len, "num_negatives": negatives, "threads": threads,
                "batches": args.batches, "examples_per_sec": round(rate, 1),
                "ms_per_batch": round(1e3 * dt / args.batches, 2),
                "train_step_examples_per_sec": [round(b / hi, 2), round(b / lo, 2)],
                "pipeline_over_step": round(rate / (b / lo), 1)}), flush=True)


def _tokenizer(name: str):
    from gemini_embed.tokenize import BertTokenizer, GemmaTokenizer
    from gemini_embed.weights import packaged

    if name == "all-minilm-l6-v2":
        return BertTokenizer.from_dir(packaged.minilm_l6_v2_dir())
    return GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf())  # gemma3-270m and the tiny test model


if __name__ == "__main__":
    main()
