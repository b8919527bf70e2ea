"""Seconds per train step and MFU of any Gemma 3 size, on the local devices, with random init and
random token batches (no weights or data are read): the step that trains (train/setup.py), timed
after its first call. Used by `gpu_check.py` and `allocator_ab.py`; alone:

    python benchmarks/train_step_timing.py --model gemma3-270m --dtype float32 --batch 16 --query_len 32 \\
        --doc_len 128 --steps 5

Prints one JSON line: seconds per step, useful FLOPs (6 x matmul params x tokens + attention),
the measured matmul peak of that dtype and the MFU.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def matmul_peak(sizes, dtype, reps: int = 10) -> float:
    """The best FLOP/s of n x n x n products over `sizes` on one device."""
    import jax
    import jax.numpy as jnp

    f, best = jax.jit(lambda a: a @ a), 0.0
    for n in sizes:
        x = jnp.ones((n, n), dtype)
        f(x).block_until_ready()
        for _ in range(reps):
            t = time.perf_counter()
            f(x).block_until_ready()
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def run(model_name: str, dtype: str, batch: int, query_len: int, doc_len: int, steps: int,
        peak_sizes=(1024, 2048)) -> dict:
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT))
    from experiments import tiny
    from gemini_embed import sharding
    from gemini_embed.pretrained import architecture
    from gemini_embed.train import setup, state as state_lib

    c = tiny.get_config()
    c.model.name = model_name
    c.data.sources, c.data.num_negatives = "squad-train", 0  # names the batch layout only: no data is read
    c.data.query_len, c.data.positive_len = query_len, doc_len
    c.train.global_batch_size, c.train.steps = batch, 1000
    cfg = architecture(model_name, dtype=dtype)
    run_ = setup.build(c, cfg, sharding.make_mesh(devices=jax.local_devices()))
    state = state_lib.init_train_state(run_.model, run_.optim, run_.loss, jax.random.key(0), shardings=run_.shardings)
    rng = np.random.default_rng(0)

    def fill(s):
        if s.dtype == jnp.bool_:
            return jax.device_put(np.ones(s.shape, bool), s.sharding)
        if jnp.issubdtype(s.dtype, jnp.integer):
            return jax.device_put(rng.integers(1, 1000, s.shape).astype(s.dtype), s.sharding)
        return jax.device_put(rng.random(s.shape).astype(s.dtype), s.sharding)

    data = jax.tree.map(fill, run_.batch)
    compiled = run_.step_fn.lower(state, data).compile()
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    dt = (time.perf_counter() - t) / steps
    useful = setup.model_flops_per_step(cfg, batch, query_len) + setup.model_flops_per_step(cfg, batch, doc_len)
    peak = matmul_peak(peak_sizes, getattr(jnp, dtype)) * len(jax.local_devices())
    return {"part": "train_step", "model": model_name, "dtype": dtype, "global_batch": batch,
            "tokens": [query_len, doc_len], "steps": steps, "s_per_step": dt, "useful_flops_per_step": useful,
            "matmul_peak": peak, "mfu": useful / dt / peak, "loss": float(metrics["loss"])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--query_len", type=int, default=32)
    ap.add_argument("--doc_len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    row = run(args.model, args.dtype, args.batch, args.query_len, args.doc_len, args.steps)
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
