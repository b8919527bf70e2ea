"""The train command: fine-tune an embedding model on local devices, a TPU pod or a GPU cluster.

    python -m gemini_embed.main --config experiments/tiny.py --workdir runs/tiny [--config.train.steps=20 ...]

Restarting the same command resumes from the latest checkpoint in --workdir. Several processes
(one per host, e.g. launched by launch/local.sh) join through jax.distributed: set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (or run on a TPU VM / under SLURM,
where jax.distributed finds them itself).
"""
from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard logs go")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed() -> None:
    """jax.distributed for multi-process runs; a no-op for one process on one machine."""
    import jax

    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # several local processes act as hosts
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                   int(os.environ["JAX_PROCESS_ID"]))
    elif any(k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")):
        jax.distributed.initialize()  # cluster environments jax auto-detects


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes at INFO
    init_distributed()
    from gemini_embed.train.loop import train

    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
