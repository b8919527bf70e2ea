"""Process set-up shared by the commands (train, evaluate, soup, mine): the cache folder, the JAX
backend on a machine without accelerators, the persistent compilation cache, and jax.distributed."""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

# Everything derived and re-creatable: assembled weights, tokenizers, prepared datasets, XLA programs.
CACHE_DIR = pathlib.Path(os.environ.get("GEMINI_EMBED_CACHE", pathlib.Path.home() / ".cache" / "gemini_embed"))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The commands' --help: the module docstring as written, and every option with its default
    (the train command's absl flags print theirs too); none shown for required options and flags."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) \
                and not action.required:
            text += " (default: %(default)s)"
        return text


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


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk (JAX_COMPILATION_CACHE_DIR, else the cache folder's `xla/`):
    a second command with the same shapes, e.g. the evaluation after training or the next stage
    of a recipe, loads them instead of compiling again (~14 s per embed program of Gemma 3 270M
    here). Every program is kept, however quick its compilation."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # jax reads it itself

    jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


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


def die_with_launcher() -> None:
    """Under launch/local.sh (GEMINI_EMBED_LAUNCHER_PID set): get SIGTERM when the launcher dies,
    even by SIGKILL, so no trainer outlives it (Linux prctl PR_SET_PDEATHSIG; SIGTERM then saves
    and stops like a preemption)."""
    launcher = os.environ.get("GEMINI_EMBED_LAUNCHER_PID")
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(launcher):  # it died before the prctl
        raise SystemExit(f"error: the launcher (pid {launcher}) is gone; not starting")


def setup_command(distributed: bool = False) -> None:
    """What every command runs first."""
    die_with_launcher()
    default_platforms()
    enable_compilation_cache()
    if distributed:
        init_distributed()
