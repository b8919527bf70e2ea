"""Training checkpoints (orbax, composite from the first save) and params-only exports.

On-disk layout::

  WORKDIR/checkpoints/                  one orbax CheckpointManager
    <step>/state/                       train-state pytree (StandardSave: OCDBT + zarr, one file set per shard)
    <step>/data/                        data-iterator state, JSON {"kind": "json"|"bytes", "value": ...}
    <step>/meta/                        JSON {"step", "wall_time", "library_version", "jax_version",
                                        "orbax_version", "config", "checksums", ...keys passed to save(meta=...)}
    <step>.orbax-checkpoint-tmp/        an unfinished save (killed mid-write; on GCS: <step>/ without
                                        commit_success.txt): never listed as a step, replaced when
                                        that step is saved again
    <step>.corrupt-<unix time>/         a newer step that failed to restore while an older one
                                        worked, moved aside so training can save that step again

Nothing here deletes a checkpoint except orbax's keep-K rotation. A state with a NaN or Inf is
never written. The step directory name is the step (`WORKDIR/checkpoints/1000/`). A save that fails
in orbax's background thread (a full disk) is raised by the next `check()` as CheckpointSaveError,
not one save interval later. `checksums` (crc32 of every leaf's value, by path) are verified on
restore: a checkpoint whose bytes changed on disk falls back like any that does not restore.
"""
from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import itertools
import json
import logging
import os
import re
import shutil
import signal
import time
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)

CHECKPOINTS_SUBDIR = "checkpoints"
STATE, DATA, META = "state", "data", "meta"
_RESERVED_META = ("step", "wall_time", "library_version", "jax_version", "orbax_version", "config", "checksums")
_LIBRARY_VERSION = importlib.metadata.version("gemini_embed")
_barrier_ids = itertools.count()  # every process calls the barriers in the same order


def _barrier(name: str) -> None:
    """Waits for all processes; orbax needs a fresh barrier name per call."""
    ocp.multihost.sync_global_processes(f"gemini_embed_{name}_{next(_barrier_ids)}")


class NonFiniteStateError(ValueError):
    """The state holds a NaN or Inf: the save is refused, so it never reaches a checkpoint."""


class CheckpointSaveError(RuntimeError):
    """A save did not reach the disk; the message names the directory, the cause and the last good step."""


class _OrbaxErrors(logging.Handler):
    """Keeps the first error orbax logs: its background save thread logs a failed write (with the
    OSError) and carries on, so this is the only place the failure shows as soon as it happens."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.first: logging.LogRecord | None = None

    def emit(self, record):
        if self.first is None and "orbax" in record.pathname:
            self.first = record


def _os_error(e: BaseException | None) -> OSError | None:
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist but none of them restores (wrong target tree, or all corrupt)."""


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def _inexact_leaves(tree) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), x) for p, x in flat
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]


def non_finite_paths(tree) -> list[str]:
    """Paths of floating leaves holding a NaN/Inf; [] when finite. One jitted reduction if clean."""
    leaves = _inexact_leaves(tree)
    if not leaves or bool(_all_finite([x for _, x in leaves])):
        return []
    return [path for path, x in leaves if not bool(jnp.isfinite(x).all())]


def checksums(tree) -> dict[str, str]:
    """crc32 of each leaf's value (its bytes in logical order, so any mesh gives the same), by
    path. Leaves this process does not hold whole (multi-host sharding) are left out."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if getattr(leaf, "is_fully_addressable", True):
            out[jax.tree_util.keystr(path)] = f"{zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).reshape(-1).view(np.uint8)):08x}"
    return out


def changed_leaves(want: Mapping[str, str], tree, prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """The paths of `tree` whose checksum differs from `want[prefix + path]` (the first prefix that
    `want` has; paths it lacks are not compared)."""
    changed = []
    for path, crc in checksums(tree).items():
        key = next((p + path for p in prefixes if p + path in want), None)
        if key is not None and want[key] != crc:
            changed.append(path)
    return changed


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def to_json(obj) -> Any:
    """`obj` as plain JSON values (what a restore gives back: tuples become lists)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _encode_data(data_state) -> dict:
    if isinstance(data_state, (bytes, bytearray)):  # grain DataLoader iterators give JSON bytes
        return {"kind": "bytes", "value": base64.b64encode(bytes(data_state)).decode("ascii")}
    return {"kind": "json", "value": to_json(data_state)}


def _decode_data(record: Mapping) -> Any:
    return base64.b64decode(record["value"]) if record["kind"] == "bytes" else record["value"]


def _registry(state_args: tuple, state_handler) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for args in state_args:
        registry.add(STATE, args, state_handler)
    for item in (DATA, META):
        registry.add(item, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def _orbax_path(path) -> epath.Path:
    """orbax's tensorstore reader and writer refuse relative paths: make local ones absolute
    (keep gs://... and other URLs as given)."""
    return epath.Path(str(path) if "://" in str(path) else os.path.abspath(path))


def _unfinished(directory: epath.Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.orbax-checkpoint-tmp*")) if directory.exists() else []


class Checkpointer:
    """Saves and restores `WORKDIR/checkpoints/<step>/{state,data,meta}`; see the module docstring.

    Use as a context manager, or call `close()` (which waits for an asynchronous save) before exit.
    """

    def __init__(self, workdir, *, save_every: int = 1000, keep: int | None = 3, async_save: bool = True,
                 config: Any = None, quarantine_corrupt: bool = True):
        self.directory = _orbax_path(workdir) / CHECKPOINTS_SUBDIR
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise ValueError(f"checkpoint.every must be a whole number of steps >= 1, got {save_every!r}")
        self.save_every = save_every
        self.config = to_json(config)
        self.quarantine_corrupt = quarantine_corrupt
        # Save on multiples of `save_every` and on a preemption signal; no orbax "first step" save.
        policy = policies.AnySavePolicy([policies.FixedIntervalPolicy(save_every),
                                         policies.PreemptionCheckpointingPolicy()])
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_decision_policy=policy,
                                               enable_async_checkpointing=async_save, create=True)
        registry = _registry((ocp.args.StandardSave, ocp.args.StandardRestore), ocp.StandardCheckpointHandler)
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)
        self._pending: int | None = None  # the step of the last save started
        self._errors = _OrbaxErrors()
        logging.getLogger("absl").addHandler(self._errors)
        self._terminated = False

    # -- bookkeeping ---------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        """True at multiples of `save_every` (or on preemption) past the latest saved step."""
        return self._manager.should_save(step)

    def wait(self) -> None:
        """Blocks until an asynchronous save is on disk; CheckpointSaveError if it is not."""
        cause = None
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - reported with the directory and the last good step
            cause = e
        self.check(cause)
        if self._pending is not None:
            step, self._pending = self._pending, None
            self._manager.reload()
            if step not in self._manager.all_steps():
                self._fail(step, None)

    def check(self, cause: BaseException | None = None) -> None:
        """Raises CheckpointSaveError if a save has failed so far (cheap: call it every step)."""
        if cause is not None or self._errors.first is not None:
            record = self._errors.first
            self._fail(self._pending, cause or (record.exc_info[1] if record and record.exc_info else None),
                       record.getMessage() if record else "")

    def _fail(self, step, cause, logged: str = "") -> None:
        err = _os_error(cause)
        # tensorstore reports an OS error as text: ... "PATH" ... [os_error_code='N'] (its wording varies)
        text = str(cause or logged)
        code = re.search(r"error_code='(\d+)'", text)
        path = re.search(r'"(/[^"]+)"', text)
        if err:
            why = f"[Errno {err.errno}] {err.strerror}" + (f": {err.filename}" if err.filename else "")
        elif code:
            why = f"[Errno {code[1]}] {os.strerror(int(code[1]))}" + (f": {path[1]}" if path else "")
        else:
            why = f"{type(cause).__name__}: {cause}" if cause else logged or "its files are not on disk"
        try:
            free = f"{shutil.disk_usage(self.directory.parent).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        self._manager.reload()
        last = self._manager.latest_step()
        self._pending, self._errors.first = None, None  # reported once
        try:  # stop orbax's threads now, or they print tracebacks at interpreter exit
            self.close()
        except Exception:  # noqa: BLE001 - the save error below is the one to report
            pass
        raise CheckpointSaveError(
            f"checkpoint of step {step} was not written to {self.directory} ({why}; {free}); the last good "
            f"checkpoint is {f'step {last}' if last is not None else 'none'}: fix the cause and rerun to resume "
            f"from it") from cause

    def close(self) -> None:
        try:
            self.wait()
        finally:
            logging.getLogger("absl").removeHandler(self._errors)
            self._manager.close()

    # -- preemption ------------------------------------------------------------------------------
    def catch_sigterm(self) -> None:
        """One process: SIGTERM (a scheduler's stop) marks the run preempted instead of killing it;
        `preempted(step)` then says so. With jax.distributed, jax's preemption service catches it
        on every host and agrees on the step."""
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_terminated", True))

    def preempted(self, step: int) -> bool:
        """True at the step where this run should save and stop (every process agrees)."""
        return self._terminated or (jax.process_count() > 1 and self._manager.reached_preemption(step))

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- save ----------------------------------------------------------------------------------
    def save(self, step: int, state, data_state: Any = None, meta: Mapping[str, Any] | None = None,
             force: bool = False) -> bool:
        """Saves when `should_save(step)` or `force`; returns whether a save started.

        `state` may be donated to the next step as soon as this returns: orbax has copied it to host.
        Raises NonFiniteStateError (and writes nothing) if a floating leaf holds a NaN/Inf.
        """
        if not force and not self.should_save(step):
            return False
        bad = non_finite_paths(state)
        if bad:
            log.error("step %d: refusing to checkpoint a state with NaN/Inf in %s", step, bad[:8])
            raise NonFiniteStateError(f"step {step}: state has non-finite values in {bad[:8]}"
                                      f"{' ...' if len(bad) > 8 else ''}; checkpoint not written")
        meta = dict(meta or {})
        clash = set(meta) & set(_RESERVED_META)
        if clash:
            raise ValueError(f"meta keys {sorted(clash)} are reserved (set by the Checkpointer)")
        record = {"step": int(step), "wall_time": time.time(), "library_version": _LIBRARY_VERSION,
                  "jax_version": jax.__version__, "orbax_version": ocp.__version__,
                  "config": self.config, "checksums": checksums(state), **to_json(meta)}
        self.check()
        started = self._manager.save(step, force=force, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave(_encode_data(data_state)),
            META: ocp.args.JsonSave(record)}))
        if started:
            self._pending = step
        return started

    # -- restore -------------------------------------------------------------------------------
    def restore(self, step: int, abstract_state) -> tuple[int, Any, Any, dict]:
        """Restores one step into the shardings of `abstract_state` (ShapeDtypeStructs)."""
        out = self._manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state),
            DATA: ocp.args.JsonRestore(), META: ocp.args.JsonRestore()}))
        meta = out[META]
        if not isinstance(meta, dict) or meta.get("step") != step:
            raise ValueError(f"meta of step {step} is missing or names another step: {meta!r:.200}")
        bad = non_finite_paths(out[STATE])
        if bad:  # save() never writes these, so the bytes on disk are damaged
            raise ValueError(f"restored state of step {step} has non-finite values in {bad[:8]}")
        changed = changed_leaves(meta.get("checksums") or {}, out[STATE])
        if jax.process_count() > 1:  # process 0 wrote the sums and holds the leaves it checks: it decides
            from jax.experimental import multihost_utils

            if not multihost_utils.broadcast_one_to_all(np.int32(not changed)):
                changed = changed or ["(found by process 0)"]
        if changed:
            raise ValueError(f"checkpoint step {step}: checksum mismatch in {changed[:4]}: its files changed "
                             f"after the save")
        return step, out[STATE], _decode_data(out[DATA]), meta

    def latest_meta(self) -> dict | None:
        """The meta record (config included) of the newest step, read without the state; None if
        there is no step or its meta does not read."""
        self._manager.reload()
        steps = self._manager.all_steps()
        if not steps:
            return None
        try:
            return self._manager.restore(max(steps), args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
        except Exception as e:  # noqa: BLE001 - restore_latest reports a damaged step
            log.warning("meta of checkpoint %s/%d does not read (%s)", self.directory, max(steps), e)
            return None

    def restore_latest(self, abstract_state) -> tuple[int, Any, Any, dict] | None:
        """(step, state, data_state, meta) from the newest step that restores; None if none exists.

        `abstract_state` is a pytree of jax.ShapeDtypeStruct with `.sharding` set: every device reads
        its own shards, the full state is never gathered on a host. A step that fails to restore is
        skipped with a warning and the previous one is tried; once an older step restores, the
        failed newer ones are renamed `<step>.corrupt-<time>` (not deleted) so their step numbers can
        be saved again. If no step restores, CheckpointRestoreError (nothing is renamed).
        """
        self._manager.reload()
        if unfinished := _unfinished(self.directory):
            log.warning("%s: ignoring unfinished save(s) %s", self.directory, unfinished)
        failed: list[tuple[int, Exception]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                result = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any failure means: try the previous step
                log.warning("checkpoint %s/%d does not restore (%s: %.300s); falling back to the previous "
                            "checkpoint", self.directory, step, type(e).__name__, e)
                failed.append((step, e))
                continue
            if failed:
                log.warning("restored step %d instead of the latest step %d", step, failed[0][0])
                if self.quarantine_corrupt:
                    self._quarantine([s for s, _ in failed])
            return result
        if failed:
            raise CheckpointRestoreError(
                f"no checkpoint in {self.directory} restores into the given state tree; tried steps "
                f"{[s for s, _ in failed]}") from failed[0][1]
        return None

    def _quarantine(self, steps: list[int]) -> None:
        if jax.process_index() == 0:
            for step in steps:
                src = self.directory / str(step)
                dst = self.directory / f"{step}.corrupt-{int(time.time())}"
                log.warning("moving unrestorable checkpoint %s to %s", src, dst)
                src.rename(dst)
        _barrier("checkpoint_quarantine")
        self._manager.reload()
