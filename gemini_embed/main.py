"""The train command: fine-tune an embedding model on local devices, a TPU pod or a GPU cluster.

    python -m gemini_embed.main --config experiments/tiny.py --workdir runs/tiny [--config.train.steps=20 ...]

Restarting the same command resumes from the latest checkpoint in --workdir. Several processes
(one per host, e.g. launched by launch/local.sh) join through jax.distributed: set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under SLURM, or set
GEMINI_EMBED_DISTRIBUTED=1 on a TPU VM slice (launch/tpu_vm.sh does), where jax.distributed
finds them itself.

Compile-only (no weights, no devices needed; see gemini_embed/train/compile_only.py):

    python -m gemini_embed.main --config experiments/gemma3_27b_pod.py --workdir runs/c27 \
        --compile_only --topology v5e:16x16
"""
from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from gemini_embed import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard logs go")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "compile the train step for --topology and write "
                                   "WORKDIR/compile_report.json instead of training")
_TOPOLOGY = flags.DEFINE_string("topology", None, "with --compile_only: v5e:16x16, v5p:4x4x8, v4:4x4x4 or cpu:N "
                                "(default: cpu:<local CPU devices>)")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "with --compile_only: memory per chip to check against "
                              "(default: the chip's HBM; none for cpu)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes at INFO
    if _COMPILE_ONLY.value:  # one process, abstract inputs: no jax.distributed, no weights
        from gemini_embed.train import compile_only

        runtime.default_platforms()
        try:
            compile_only.run(_CONFIG.value, _WORKDIR.value, _TOPOLOGY.value, _HBM_GIB.value)
        except compile_only.DoesNotFitError as e:
            raise SystemExit(f"error: {e}") from None
        return
    runtime.setup_command(distributed=True)
    from gemini_embed.train.checkpoint import CheckpointSaveError
    from gemini_embed.train.loop import train

    try:
        train(_CONFIG.value, _WORKDIR.value)
    except CheckpointSaveError as e:
        raise SystemExit(f"error: {e}") from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a config key that does not exist as one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        keys = [a.split("=", 1)[0].removeprefix("--") for a in argv[1:] if a.startswith("--config.")]
        missing = str(e).strip("\"'")
        key = next((k for k in keys if k.split(".")[-1] == missing or f".{missing}." in f"{k}."), missing)
        raise SystemExit(f"error: {key} is not a key of the config (see the config file's get_config for its keys; "
                         f"a key must exist there to be set from the command line)") from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
