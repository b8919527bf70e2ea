"""Generated tokens/s of our Gemma 3 decoding vs HF transformers' `generate`, and prompt tokens/s of
the LLM scorer, in one run on the same GGUF, prompts, batch and lengths.

    python benchmarks/decode_throughput.py [--batch 8] [--prompts 24] [--new 32] [--temperature 0.7 --top_p 0.95] [--no_peer]

Prompts: few-shot synthetic-query prompts over real SQuAD train paragraphs (as the synth command
builds them). Both sides decode greedily (or sample, with --temperature > 0 and --top_p) for
exactly --new tokens (no early stop), batches of
--batch left-padded prompts. Warm-up, not timed: our side decodes the timed prompts once first
(compiling every shape; a long synth run compiles each once), HF's side its first batch.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def prompts(n: int) -> list[str]:
    from gemini_embed.data.builders import data_root
    from gemini_embed.data.files import Problems
    from gemini_embed.llm import synthesis

    root = data_root()
    items = list(synthesis.read_corpus(f"squad:{root}/squad_v1.1_train/squad_v1.1_train.jsonl.gz", Problems()))
    pool = synthesis.few_shot_examples("query", root, n=64, seed=1)
    t = synthesis.TEMPLATES["query"]
    return [synthesis.prompt(t, pool[3 * i:3 * i + 3], items[-1 - i][2]) for i in range(n)]


def ours(texts, batch, new, temperature, top_p):
    from gemini_embed.llm.decoding import Generator

    gen = Generator(batch_size=batch, max_prompt_tokens=1024)
    gen.tokenizer.eos_id = -1  # never stop early: both sides decode exactly `new` tokens
    ids = [gen.encode_prompt(t) for t in texts]
    kw = dict(temperature=temperature, top_p=top_p)
    gen.generate_ids(ids[batch:], new, **kw)  # warm-up: compiles the prefill and step of every shape timed below
    t = time.perf_counter()
    out = gen.generate_ids(ids[batch:], new, **kw)
    secs = time.perf_counter() - t
    assert all(len(o) == new for o in out)
    return sum(len(o) for o in out) / secs, [len(i) for i in ids]


def peer(texts, batch, new, temperature, top_p):
    import torch
    import transformers

    from gemini_embed.weights.packaged import gemma3_270m_gguf

    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f, padding_side="left")
    m = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()

    def run(part):
        enc = tok(part, padding=True, return_tensors="pt")
        with torch.no_grad():
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else \
                dict(do_sample=False, top_p=None)
            out = m.generate(**enc, max_new_tokens=new, min_new_tokens=new, top_k=None, **sampling)
        return (out.shape[1] - enc["input_ids"].shape[1]) * len(part)

    run(texts[:batch])  # warm-up
    t = time.perf_counter()
    n = sum(run(texts[s:s + batch]) for s in range(batch, len(texts), batch))
    return n / (time.perf_counter() - t)


def scorer_rate(texts):
    from gemini_embed.llm.scoring import QueryLikelihoodScorer

    s = QueryLikelihoodScorer(max_passage_tokens=256, batch_size=8)
    pairs = [("What is it about?", ("", t)) for t in texts]
    s.score(*zip(*pairs[:8]))  # warm-up
    t = time.perf_counter()
    s.score([q for q, _ in pairs[8:]], [p for _, p in pairs[8:]])
    tokens = sum(len(ids) for ids, _ in s.pair_ids([q for q, _ in pairs[8:]], [p for _, p in pairs[8:]]))
    return tokens / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=24, help="the first --batch are the warm-up")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    ap.add_argument("--top_p", type=float, default=1.0)
    ap.add_argument("--no_peer", action="store_true")
    args = ap.parse_args()
    texts = prompts(args.prompts)
    rate, lengths = ours(texts, args.batch, args.new, args.temperature, args.top_p)
    row = {"batch": args.batch, "prompts_timed": args.prompts - args.batch, "new_tokens": args.new,
           "temperature": args.temperature, "top_p": args.top_p,
           "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1), "ours_tokens_per_s": round(rate, 2)}
    if not args.no_peer:
        row["hf_generate_tokens_per_s"] = round(peer(texts, args.batch, args.new, args.temperature, args.top_p), 2)
        row["ratio"] = round(rate / row["hf_generate_tokens_per_s"], 3)
    row["scorer_prompt_tokens_per_s"] = round(scorer_rate(texts), 1)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
