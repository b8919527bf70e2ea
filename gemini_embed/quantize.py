"""Quantised embeddings: int8 / uint8 (per-dimension ranges) and binary / ubinary (sign bits).

Scalar precisions map each dimension's calibration range [lo, hi] onto 256 levels:
`level = floor((x - lo) / ((hi - lo) / 255))`, clipped to 0..255; uint8 stores the level, int8
the level - 128. The ranges come from a calibration set of embeddings (`calibration_ranges`; the
Embedder keeps one, `Embedder.calibrate`, saved in a model folder as quantization_calibration.npy)
or are given; they must be the same for queries and documents, so they are never taken from the
texts being quantised.
Binary precisions keep one bit per dimension, `x > 0`, packed eight to a byte (big-endian
within the byte, as `np.packbits`); ubinary stores the packed bytes, binary the bytes - 128.

Similarity of quantised vectors: the scalar levels are scored as float vectors (cosine); bits as
+-1 vectors, whose cosine is 1 - 2 * hamming / D, so a cosine search over `as_float(...)` is
exactly a Hamming search (`eval/search.py: binary_search`, with optional float rescoring).
"""
from __future__ import annotations

import numpy as np

from gemini_embed.normalize import mrl_truncate

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
CALIBRATION_FILE = "quantization_calibration.npy"
CONSTANT_RANGE = 1e-6  # of unit-length embeddings: a dimension that varies less is constant


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """[2, D] float32: each dimension's minimum (row 0) and maximum (row 1) over `embeddings`."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"calibration embeddings must be [N >= 2, D], got shape {emb.shape}")
    return np.stack([emb.min(axis=0), emb.max(axis=0)])


def ranges_at(calibration: np.ndarray, dim: int) -> np.ndarray:
    """The ranges [2, dim] of the calibration embeddings [N, D] seen at Matryoshka dim `dim`
    (truncated and re-normalised, as the embeddings they quantise; untouched at dim = D)."""
    calibration = np.asarray(calibration, np.float32)
    return calibration_ranges(calibration if dim == calibration.shape[1] else mrl_truncate(calibration, dim))


def bytes_per_vector(precision: str, dim: int) -> int:
    check_precision(precision)
    return 4 * dim if precision == "float32" else dim if precision in ("int8", "uint8") else -(-dim // 8)


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """embeddings [N, D] float -> [N, D] int8/uint8 (scalar), [N, ceil(D/8)] int8/uint8 (binary),
    or the float32 input itself. `ranges` [2, D] is required for int8 and uint8."""
    check_precision(precision)
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {emb.shape}")
    if precision == "float32":
        return emb
    if precision in ("binary", "ubinary"):
        packed = np.packbits(emb > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        raise ValueError(f"precision={precision!r} needs calibration ranges: pass ranges= (calibration_ranges() "
                         "of a calibration set's embeddings)")
    ranges = np.asarray(ranges, np.float32)
    if ranges.shape != (2, emb.shape[1]):
        raise ValueError(f"ranges must be [2, {emb.shape[1]}] (min row, max row), got shape {ranges.shape}")
    lo, hi = ranges
    # A dimension whose range is float32 noise (MiniLM has one at ~1e-33) is constant: level 0.
    # sentence-transformers spreads such a range over all 256 levels, which turns the noise into a
    # full-scale random dimension; elsewhere the levels are the same as its quantize_embeddings.
    flat = hi - lo < CONSTANT_RANGE
    step = np.where(flat, 1.0, (hi - lo) / 255.0).astype(np.float32)
    emb = np.where(flat, lo, emb)
    level = np.clip(np.floor((emb - lo) / step), 0, 255).astype(np.int16)
    return (level - 128).astype(np.int8) if precision == "int8" else level.astype(np.uint8)


def as_float(quantized: np.ndarray, precision: str, dim: int | None = None) -> np.ndarray:
    """Quantised vectors as float32 vectors for cosine scoring: the levels themselves (scalar),
    +-1 per bit (binary; `dim` drops the padding bits of a D that is not a multiple of 8)."""
    check_precision(precision)
    q = np.asarray(quantized)
    if precision in ("float32", "int8", "uint8"):
        return q.astype(np.float32)
    packed = (q.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else q.astype(np.uint8)
    bits = np.unpackbits(packed, axis=-1)[:, :dim]
    return bits.astype(np.float32) * 2.0 - 1.0
