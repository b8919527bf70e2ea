"""Checks that imported tensors fit the model: clear errors naming the tensor and both shapes."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np


class WeightImportError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def _flatten(tree: Any) -> dict[str, Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
    return flat


def check_params(loaded: Any, expected: Any, source: str) -> None:
    """Raise WeightImportError unless `loaded` has exactly the leaves and shapes of `expected`.

    `expected` is usually `jax.eval_shape(model.init, ...)` (shape structs, nothing allocated).
    """
    got, want = _flatten(loaded), _flatten(expected)
    missing = sorted(set(want) - set(got))
    if missing:
        raise WeightImportError(f"{source}: missing tensor(s) for {', '.join(missing[:10])}"
                                + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    extra = sorted(set(got) - set(want))
    if extra:
        raise WeightImportError(f"{source}: unexpected tensor(s) {', '.join(extra[:10])}")
    for name, w in want.items():
        if tuple(np.shape(got[name])) != tuple(w.shape):
            raise WeightImportError(
                f"{source}: tensor {name} has shape {tuple(np.shape(got[name]))}, expected {tuple(w.shape)}")


def require(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    """Fetch one tensor from a checkpoint, failing with its name and shapes when absent or misshapen."""
    if name not in tensors:
        raise WeightImportError(f"{source}: missing tensor {name!r} (expected shape {shape})")
    t = tensors[name]
    if tuple(t.shape) != tuple(shape):
        raise WeightImportError(f"{source}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
    return t
