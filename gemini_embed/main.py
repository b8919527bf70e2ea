"""The train command: fine-tune an embedding model on local devices, a TPU pod or a GPU cluster.

    python -m gemini_embed.main --config experiments/tiny.py --workdir runs/tiny [--config.train.steps=20 ...]

Restarting the same command resumes from the latest checkpoint in --workdir. Several processes
(one per host, e.g. launched by launch/local.sh) join through jax.distributed: set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under SLURM, or set
GEMINI_EMBED_DISTRIBUTED=1 on a TPU VM slice (launch/tpu_vm.sh does), where jax.distributed
finds them itself.

Compile-only (no weights, no devices needed; see gemini_embed/train/compile_only.py):

    python -m gemini_embed.main --config experiments/gemma3_27b.py --workdir runs/c27 \
        --compile_only --topology v5e:16x16
"""
from __future__ import annotations

import importlib.util
import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard logs go")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "compile the train step for --topology and write "
                                   "WORKDIR/compile_report.json instead of training")
_TOPOLOGY = flags.DEFINE_string("topology", None, "with --compile_only: v5e:16x16, v5p:4x4x8, v4:4x4x4 or cpu:N "
                                "(default: cpu:<local CPU devices>)")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "with --compile_only: memory per chip to check against "
                              "(default: the chip's HBM; none for cpu)")
flags.mark_flags_as_required(["config", "workdir"])


def default_platforms() -> None:
    """With libtpu installed (the `tpu` extra, for compile-only runs) on a machine without TPU
    chips or a GPU plugin, jax would load libtpu on every run and print its start-up errors: use
    the CPU backend there unless JAX_PLATFORMS says otherwise."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin")):
        return
    import jax
    from jax._src import hardware_utils

    if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0:
        jax.config.update("jax_platforms", "cpu")


def init_distributed() -> None:
    """jax.distributed for multi-process runs; a no-op for one process on one machine."""
    import jax

    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # several local processes act as hosts
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                   int(os.environ["JAX_PROCESS_ID"]))
    elif (any(k in os.environ for k in ("SLURM_JOB_ID", "MEGASCALE_COORDINATOR_ADDRESS"))
          or os.environ.get("GEMINI_EMBED_DISTRIBUTED") == "1"
          or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")):  # "localhost" alone only quiets libtpu
        jax.distributed.initialize()  # cluster environments jax auto-detects


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes at INFO
    default_platforms()
    if _COMPILE_ONLY.value:  # one process, abstract inputs: no jax.distributed, no weights
        from gemini_embed.train import compile_only

        try:
            compile_only.run(_CONFIG.value, _WORKDIR.value, _TOPOLOGY.value, _HBM_GIB.value)
        except compile_only.DoesNotFitError as e:
            raise SystemExit(f"error: {e}") from None
        return
    init_distributed()
    from gemini_embed.train.loop import train

    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
