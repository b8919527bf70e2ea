"""Correctness and speed on one NVIDIA GPU, in one command of a few minutes (`benchmarks/gpu.sh`).

    python benchmarks/gpu_check.py --out runs/gpu [--smoke]

1. Parity on the GPU, in float32 at full matmul precision: all-MiniLM-L6-v2 `embed` vs
   sentence-transformers (worst cosine over 200 STS Benchmark sentences), and Gemma 3 270M
   (bidirectional, mean-pooled, no projection; BOS + text + EOS) vs HF transformers on the same
   GGUF (worst cosine over 40 sentences and 10 SciFact abstracts up to 512 tokens). Pass: >= 0.9999.
2. Embed throughput, Gemma 3 270M, ours vs HF transformers on the same device, texts and batch
   size: 1,000 STS Benchmark sentences and 256 SciFact abstracts at 512 tokens; float32 (the
   frameworks' default matmul precision) and bfloat16.
3. The train step of a Gemma 3 1B-size encoder (random init: no 1B weights are packaged), bf16
   compute over float32 params and AdamW moments, global batch 64 x (64 + 256) tokens: seconds per
   step and MFU = useful FLOPs (6 x matmul params x tokens + attention) / step / the measured bf16
   matmul peak (the best of 8192^3 products in JAX on the same GPU).

Prints one JSON line per part and writes OUT/gpu_check.json. `--smoke` runs every part small (a few
texts, the tiny Gemma for the train step) to check the script itself on a CPU.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("GEMINI_EMBED_DATA", ROOT.parent / "shared" / "data"))


def sts_sentences(n: int) -> list[str]:
    out = []
    with open(DATA / "sts" / "stsbenchmark" / "sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out += [row[5], row[6]]
    return out[:n]


def scifact_docs(n: int) -> list[str]:
    out = []
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append((d["title"] + " " + d["text"]).strip())
            if len(out) == n:
                break
    return out


def _timed(fn, *args) -> float:
    fn(*args)  # warm-up: compilation, autotuning, allocator
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def hf_gemma(torch_device: str, dtype):
    import torch
    import transformers

    from gemini_embed.weights.packaged import gemma3_270m_gguf

    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = transformers.AutoConfig.from_pretrained(d, gguf_file=f).to_dict()
    cfg["use_bidirectional_attention"] = True  # built with the flag: the window is halved as EmbeddingGemma's
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, config=transformers.Gemma3TextConfig(**cfg),
                                                              dtype=torch.float32).eval()
    return tok, model.model.to(torch_device, dtype)


def hf_embed(tok, model, texts, batch_size, max_length):
    """Mean-pooled last hidden states of BOS + text + EOS, right-padded (our tokenization)."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            ids = [tok(t)["input_ids"][:max_length - 1] + [tok.eos_token_id] for t in texts[s:s + batch_size]]
            width = max(map(len, ids))
            x = torch.tensor([i + [0] * (width - len(i)) for i in ids], device=model.device)
            m = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=model.device)
            h = model(input_ids=x, attention_mask=m).last_hidden_state.float()
            out.append(((h * m[..., None]).sum(1) / m.sum(1, keepdim=True)).cpu().numpy())
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return np.concatenate(out)


def _worst_cosine(a, b) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def parity(torch_device: str, n_sts: int, n_docs: int) -> dict:
    import jax
    import torch
    from sentence_transformers import SentenceTransformer

    import gemini_embed as ge
    from gemini_embed.weights.packaged import minilm_l6_v2_dir

    texts = sts_sentences(n_sts)
    with jax.default_matmul_precision("highest"):
        ours = ge.Embedder.from_pretrained("all-minilm-l6-v2").embed(texts)
        st = SentenceTransformer(str(minilm_l6_v2_dir()), device=torch_device)
        minilm = _worst_cosine(np.asarray(ours), st.encode(texts, normalize_embeddings=True))
        mixed = texts[:n_sts // 5] + scifact_docs(n_docs)
        gemma = ge.Embedder.from_pretrained("gemma3-270m", projection=None, max_length=512)
        torch.backends.cuda.matmul.allow_tf32 = False
        tok, hf = hf_gemma(torch_device, torch.float32)
        gemma_cos = _worst_cosine(np.asarray(gemma.embed(mixed)), hf_embed(tok, hf, mixed, 16, 512))
    return {"part": "parity", "minilm_worst_cosine": minilm, "gemma3_270m_worst_cosine": gemma_cos,
            "texts": {"minilm": len(texts), "gemma3_270m": len(mixed)},
            "pass": minilm >= 0.9999 and gemma_cos >= 0.9999}


def throughput(torch_device: str, n_sts: int, n_docs: int, batch_size: int) -> list[dict]:
    import torch

    import gemini_embed as ge

    rows = []
    workloads = {"sts_sentences": (sts_sentences(n_sts), 512), "scifact_512_tokens": (scifact_docs(n_docs), 512)}
    for dtype in ("float32", "bfloat16"):
        ours = ge.Embedder.from_pretrained("gemma3-270m", projection=None, max_length=512, dtype=dtype)
        tok, hf = hf_gemma(torch_device, getattr(torch, dtype))
        for name, (texts, length) in workloads.items():
            t_ours = _timed(_embed_ours, ours, texts, batch_size)
            t_hf = _timed(hf_embed, tok, hf, texts, batch_size, length)
            rows.append({"part": "embed", "model": "gemma3-270m", "dtype": dtype, "texts": name, "n": len(texts),
                         "batch_size": batch_size, "ours_per_s": len(texts) / t_ours,
                         "hf_transformers_per_s": len(texts) / t_hf, "ratio": t_hf / t_ours})
    return rows


def _embed_ours(model, texts, batch_size):
    return np.asarray(model.embed(texts, batch_size=batch_size))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu"))
    ap.add_argument("--smoke", action="store_true", help="every part small, to check the script on a CPU")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import jax
    import torch

    import train_step_timing  # beside this script

    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {"part": "devices", "jax": [d.device_kind for d in jax.local_devices()], "jax_backend": jax.default_backend(),
            "torch": torch.cuda.get_device_name(0) if torch_device == "cuda" else "cpu"}
    if jax.default_backend() != "gpu" and not args.smoke:
        raise SystemExit(f"jax runs on {jax.default_backend()}, not a GPU: install jax with CUDA "
                         f"(pip install 'jax[cuda12]=={jax.__version__}') or pass --smoke")
    small = args.smoke
    rows = [info]
    print(json.dumps(info), flush=True)
    for part in (lambda: [parity(torch_device, 10 if small else 200, 2 if small else 10)],
                 lambda: throughput(torch_device, 16 if small else 1000, 4 if small else 256, 8 if small else 64),
                 lambda: [train_step_timing.run("gemma3-tiny" if small else "gemma3-1b", "bfloat16", 8 if small else 64,
                                                16 if small else 64, 32 if small else 256, 2 if small else 10,
                                                peak_sizes=(512,) if small else (8192,))]):
        for row in part():
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
