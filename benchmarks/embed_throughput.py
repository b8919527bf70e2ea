"""Cold start and embed throughput on 1,000 real STS Benchmark sentences, vs a peer in the same run.

    python benchmarks/embed_throughput.py [--models all-minilm-l6-v2,gemma3-270m] [--n 1000] [--no_peer]

Peers: sentence-transformers for all-MiniLM-L6-v2; HF transformers (bidirectional Gemma 3, same
GGUF) for gemma3-270m. Prints one JSON line per model: cold start seconds, texts/s (first call,
compilation included; and warm), XLA compilations, peer texts/s and the ratio.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time

import numpy as np


def sts_sentences(n: int) -> list[str]:
    root = os.environ.get("GEMINI_EMBED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    out = []
    with open(f"{root}/sts/stsbenchmark/sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out += [row[5], row[6]]
    return out[:n]


def peer_minilm(texts, batch_size):
    from sentence_transformers import SentenceTransformer

    from gemini_embed.weights.packaged import minilm_l6_v2_dir

    m = SentenceTransformer(str(minilm_l6_v2_dir()), device="cpu")
    t = time.perf_counter()
    m.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - t)


def peer_gemma(texts, batch_size):
    import torch
    import transformers

    from gemini_embed.weights.packaged import gemma3_270m_gguf

    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = transformers.AutoConfig.from_pretrained(d, gguf_file=f).to_dict()
    cfg["use_bidirectional_attention"] = True
    cfg = transformers.Gemma3TextConfig(**cfg)
    m = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, config=cfg, dtype=torch.float32).eval()
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tok([x for x in texts[s:s + batch_size]], padding=True, return_tensors="pt")
            h = m.model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            (h * mask).sum(1) / mask.sum(1)
    return len(texts) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all-minilm-l6-v2,gemma3-270m")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--no_peer", action="store_true")
    args = ap.parse_args()
    import jax

    import gemini_embed as ge

    texts = sts_sentences(args.n)
    for name in args.models.split(","):
        t = time.perf_counter()
        model = ge.Embedder.from_pretrained(name)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        model.embed(texts, batch_size=args.batch_size)
        first = time.perf_counter() - t
        t = time.perf_counter()
        model.embed(texts, batch_size=args.batch_size)
        warm = time.perf_counter() - t
        row = {"model": name, "devices": jax.local_device_count(), "texts": len(texts),
               "cold_start_s": round(cold, 2), "texts_per_s_first_call": round(len(texts) / first, 1),
               "texts_per_s_warm": round(len(texts) / warm, 1), "compilations": model.num_compilations}
        if not args.no_peer:
            peer = (peer_minilm if name == "all-minilm-l6-v2" else peer_gemma)(texts, args.batch_size)
            row.update(peer_texts_per_s=round(peer, 1), ratio_vs_peer=round(len(texts) / warm / peer, 2))
        print(json.dumps(row), flush=True)
        del model


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
