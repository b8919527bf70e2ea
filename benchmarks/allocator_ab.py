"""The memory allocator under XLA:CPU, A/B in one run: glibc malloc vs tcmalloc (LD_PRELOAD), and
optionally jemalloc and glibc's huge-page tunable.

    python benchmarks/allocator_ab.py [--workloads train,embed] [--allocators glibc,tcmalloc] [--repeats 2]

Why: XLA:CPU allocates each call's temporaries afresh (the Gemma 3 270M train step of 16 x (32 +
128) tokens: 5.5 GiB), and glibc serves blocks that large with mmap and returns them with munmap,
so the kernel maps and zero-fills every page again on every step (in a 40-step run, 61 million
page faults and 21% of the CPU time in the kernel). tcmalloc keeps freed spans for reuse.

Workloads, each in a fresh process per allocator, alternating: `train` (train_step_timing.py,
Gemma 3 270M in float32, random init, 16 x (32 + 128) tokens, 4 timed steps) and `embed` (Gemma 3
270M, 64 SciFact abstracts at 256 tokens, batch 64, two timed calls after one warm-up). Prints one
JSON line per run (the workload's own seconds, and the process's user and system CPU seconds and
minor page faults) and, per workload, each allocator's speedup over glibc (best of the repeats).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = "/usr/lib/x86_64-linux-gnu"
ALLOCATORS = {  # name -> environment; Debian packages libtcmalloc-minimal4 and libjemalloc2
    "glibc": {},
    "tcmalloc": {"LD_PRELOAD": f"{LIB}/libtcmalloc_minimal.so.4"},
    "jemalloc": {"LD_PRELOAD": f"{LIB}/libjemalloc.so.2"},
    "glibc-hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}


def _embed_seconds() -> float:
    sys.path.insert(0, str(ROOT))
    import gemini_embed as ge
    from gpu_check import scifact_docs

    docs = scifact_docs(128)
    model = ge.Embedder.from_pretrained("gemma3-270m", max_length=256)
    model.embed(docs[:64], batch_size=64)
    t = time.perf_counter()
    for _ in range(2):
        model.embed(docs[64:], batch_size=64)
    return (time.perf_counter() - t) / 2


def _child(workload: str) -> None:
    if workload == "train":
        import train_step_timing

        seconds = train_step_timing.run("gemma3-270m", "float32", 16, 32, 128, 4)["s_per_step"]
    else:
        seconds = _embed_seconds()
    print(json.dumps({"seconds": seconds}), flush=True)


def _measure(workload: str, allocator: str) -> dict:
    env = dict(os.environ, **ALLOCATORS[allocator])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, __file__, "--child", workload], env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"{workload} under {allocator} failed:\n{p.stderr[-3000:]}")
    seconds = json.loads(p.stdout.strip().splitlines()[-1])["seconds"]
    return {"workload": workload, "allocator": allocator, "seconds": seconds,
            "process_user_s": after.ru_utime - before.ru_utime, "process_system_s": after.ru_stime - before.ru_stime,
            "minor_page_faults": after.ru_minflt - before.ru_minflt}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="train,embed")
    ap.add_argument("--allocators", default="glibc,tcmalloc", help=f"of {', '.join(ALLOCATORS)}")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    allocators = args.allocators.split(",")
    for name in allocators:
        lib = ALLOCATORS[name].get("LD_PRELOAD")
        if lib and not os.path.exists(lib):
            raise SystemExit(f"{name}: {lib} not found (apt-get install libtcmalloc-minimal4 libjemalloc2)")
    rows = []
    for workload in args.workloads.split(","):
        for _ in range(args.repeats):
            for allocator in allocators:
                rows.append(_measure(workload, allocator))
                print(json.dumps(rows[-1]), flush=True)
        best = {a: min(r["seconds"] for r in rows if r["workload"] == workload and r["allocator"] == a)
                for a in allocators}
        print(json.dumps({"workload": workload, "best_seconds": best,
                          "speedup_over_glibc": {a: best["glibc"] / t for a, t in best.items()}}), flush=True)
    return rows


if __name__ == "__main__":
    main()
