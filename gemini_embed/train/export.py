"""Params for serving: params-only exports, and the params of a workdir's newest good checkpoint.

  EXPORT/
    params/          params pytree (StandardSave)
    config.json      model config dict, written last: its presence marks the export done

Both load as host numpy arrays (`load_params`), without the optimizer state or a mesh.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from gemini_embed.train.checkpoint import (CHECKPOINTS_SUBDIR, META, STATE, CheckpointRestoreError,
                                           NonFiniteStateError, _barrier, _orbax_path, _registry, changed_leaves,
                                           non_finite_paths, to_json)

log = logging.getLogger("gemini_embed.train.checkpoint")  # one logger for everything checkpoints say

EXPORT_PARAMS, EXPORT_CONFIG = "params", "config.json"


def _verify(meta: dict, params, step: int) -> None:
    """The params against the checksums their train state was saved with (TrainState paths start
    `.params`, those of a plain dict state `['params']`)."""
    changed = changed_leaves(meta.get("checksums") or {}, params, (".params", "['params']"))
    if changed:
        raise ValueError(f"checkpoint step {step}: checksum mismatch in {changed[:4]}: its files changed after the save")


def export_params(params, directory, config: Any, *, overwrite: bool = False) -> epath.Path:
    """Writes `EXPORT/params` (orbax StandardSave) then `EXPORT/config.json` (the model config)."""
    directory = _orbax_path(directory)
    bad = non_finite_paths(params)
    if bad:
        raise NonFiniteStateError(f"params have non-finite values in {bad[:8]}; export not written")
    config = to_json(config)
    if (directory / EXPORT_PARAMS).exists() or (directory / EXPORT_CONFIG).exists():
        if not overwrite:
            raise FileExistsError(f"{directory} already holds an export (pass overwrite=True)")
        if jax.process_index() == 0:
            (directory / EXPORT_CONFIG).unlink(missing_ok=True)  # first: the export is now incomplete
            (directory / EXPORT_PARAMS).rmtree(missing_ok=True)
        _barrier("export_clear")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / EXPORT_PARAMS, params)
        ckpt.wait_until_finished()
    if jax.process_index() == 0:
        tmp = directory / (EXPORT_CONFIG + ".tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
        tmp.rename(directory / EXPORT_CONFIG)
    _barrier("export_done")
    return directory


def _host_subtree(restore_from, tree_metadata, key: str | None):
    """Restores `tree_metadata[key]` (or all of it) as numpy arrays, reading nothing else."""
    sub = tree_metadata if key is None else tree_metadata[key]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), sub)
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), sub)
    if key is None:
        return restore_from(ocp.args.PyTreeRestore(item=target, restore_args=restore_args))
    return restore_from(ocp.args.PyTreeRestore(item={key: target}, restore_args={key: restore_args},
                                               partial_restore=True))[key]


def load_params(path) -> tuple[Any, dict]:
    """(params as host numpy arrays, config dict) from an export, a workdir or its checkpoints/.

    Export: `EXPORT/params` and `EXPORT/config.json`. Workdir: the `params` field of the state of
    the newest step that restores (older steps are tried with a warning), and `meta["config"]`.
    """
    path = _orbax_path(path)
    if (path / EXPORT_CONFIG).exists() and (path / EXPORT_PARAMS).exists():
        item = path / EXPORT_PARAMS
        with ocp.PyTreeCheckpointer() as ckpt:
            tree = ckpt.metadata(item).item_metadata.tree
            params = _host_subtree(lambda args: ckpt.restore(item, args=args), tree, None)
        return params, json.loads((path / EXPORT_CONFIG).read_text())
    directory = path / CHECKPOINTS_SUBDIR if (path / CHECKPOINTS_SUBDIR).is_dir() else path
    registry = _registry((ocp.args.PyTreeRestore,), ocp.PyTreeCheckpointHandler)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(directory, options=options, handler_registry=registry) as manager:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{path}: neither an export ({EXPORT_PARAMS}/ + {EXPORT_CONFIG}) nor a "
                                    f"workdir with finished checkpoints")
        for step in steps:
            try:
                with ocp.PyTreeCheckpointer() as ckpt:
                    tree = ckpt.metadata(directory / str(step) / STATE).item_metadata.tree
                if "params" not in tree:
                    raise KeyError(f"state has no 'params' field (top-level keys: {sorted(tree)})")
                meta = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
                params = _host_subtree(
                    lambda args: manager.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE],
                    tree, "params")
                _verify(meta, params, step)
            except Exception as e:  # noqa: BLE001 - try the previous step
                log.warning("checkpoint %s/%d does not load (%s: %.300s); falling back to the previous "
                            "checkpoint", directory, step, type(e).__name__, e)
                continue
            return params, meta.get("config") or {}
    raise CheckpointRestoreError(f"no checkpoint in {directory} loads; tried steps {steps}")
