"""One host of a multi-process pipeline run (started by test_two_hosts.py, one process per host).

    python tests/data/two_hosts.py PROCESS_ID NUM_PROCESSES PORT PREPARED_DIR OUT_DIR NUM_BATCHES

Joins the others through jax.distributed (gloo CPU collectives), builds its slice of each global
batch, assembles the global arrays with make_array_from_process_local_data, gathers them back and
(process 0) writes them to OUT_DIR/global.npz; every process writes the rows it read.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from data_helpers import NAMES, SHAPE, SEED, recorded_sources  # noqa: E402


def main(pid, n, port, prepared, out, batches):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", n, pid)
    from gemini_embed import sharding
    from gemini_embed.data import pipeline
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights import packaged

    tok = GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf())
    sources = recorded_sources(pipeline.open_sources(NAMES, data_dir=prepared, verbose=False))
    pipe = pipeline.Pipeline(sources, tok, SHAPE, seed=SEED, process_index=jax.process_index(),
                             process_count=jax.process_count(), threads=0)
    mesh = sharding.make_mesh(-1, 1, 1)  # all 2 x n devices on the batch axis
    it = pipe.iterator()
    gathered = {}
    for k in range(batches):
        host = next(it)
        batch = pipeline.global_batch(host, mesh)
        for name, arr in batch.items():
            gathered.setdefault(name, []).append(np.asarray(multihost_utils.process_allgather(arr, tiled=True)))
        gathered.setdefault("dataset", []).append(int(host["dataset"]))
    if pid == 0:
        np.savez(os.path.join(out, "global.npz"), **{k: np.stack(v) for k, v in gathered.items()})
    with open(os.path.join(out, f"rows_{pid}.json"), "w") as f:
        json.dump({s.name: s.records.read for s in sources}, f)
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]), int(a[2]), a[3], a[4], int(a[5]))
