"""Compiled temp memory of the train step, gradient cache vs plain, as the global batch grows.

    python benchmarks/grad_cache_memory.py [--model gemma3-tiny] [--batches 64,256,1024,4096] [--chunk 32]
        [--query_len 32] [--doc_len 64] [--negatives 1] [--devices 1] [--remat]

Nothing is allocated or run: the step is lowered with ShapeDtypeStruct inputs (abstract train
state and batch) and compiled for the local CPU devices; `memory_analysis()` gives bytes per
device. temp = activations + scratch (what grad caching bounds); the argument bytes (params,
optimizer state, batch) do not depend on the method. Prints a markdown table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-tiny")
    ap.add_argument("--batches", default="64,256,1024,4096")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--query_len", type=int, default=32)
    ap.add_argument("--doc_len", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--devices", type=int, default=1, help="simulated CPU devices (batch sharded over data)")
    ap.add_argument("--remat", action="store_true")
    args = ap.parse_args(argv)

    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import dataclasses

    import jax

    from gemini_embed import sharding
    from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig
    from gemini_embed.model.gemma3 import GEMMA3_PRESETS
    from gemini_embed.train import (LossConfig, OptimConfig, abstract_train_state, batch_spec, make_optimizer,
                                    make_train_step, memory_report, train_state_shardings, with_shardings)

    encoder = dataclasses.replace(GEMMA3_PRESETS[args.model], remat=args.remat)
    model = EmbeddingModel(EmbeddingModelConfig(encoder, projection=(768,) if args.model != "gemma3-tiny" else (32,)))
    optim_cfg, loss_cfg = OptimConfig(), LossConfig()
    mesh = sharding.make_mesh(data=-1, devices=jax.devices()[:args.devices])
    shardings = train_state_shardings(model, optim_cfg, loss_cfg, mesh)
    state = with_shardings(abstract_train_state(model, optim_cfg, loss_cfg), shardings)
    optimizer = make_optimizer(optim_cfg)
    mib = lambda b: b / 2**20  # noqa: E731

    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        batch = batch_spec(mesh, b, args.query_len, args.doc_len, num_negatives=args.negatives,
                           negative_len=args.doc_len)
        row = {"global_batch": b}
        for name, chunk in (("plain", 0), ("cached", args.chunk)):
            step = make_train_step(model, optimizer, loss_cfg, mesh, shardings, grad_cache_chunk_size=chunk)
            t = time.perf_counter()
            rep = memory_report(step.lower(state, batch).compile())
            row[f"{name}_temp_mib"] = round(mib(rep["temp"]), 1)
            row[f"{name}_compile_s"] = round(time.perf_counter() - t, 1)
        row["argument_mib"] = round(mib(rep["argument"]), 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    print(f"\n{args.model}, chunk {args.chunk}, query {args.query_len} / doc {args.doc_len} tokens, "
          f"{args.negatives} hard negative(s), {args.devices} device(s), remat={args.remat}; "
          f"temp MiB per device (compiled memory_analysis)\n")
    print("| global batch | plain temp | cached temp | arguments |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['global_batch']} | {r['plain_temp_mib']} | {r['cached_temp_mib']} | {r['argument_mib']} |")
    print(json.dumps({"model": args.model, "chunk": args.chunk, "rows": rows}))


if __name__ == "__main__":
    main()
