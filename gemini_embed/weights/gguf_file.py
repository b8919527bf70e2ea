"""A fast GGUF reader: header, metadata and tensor directory parsed directly from a memory map.

`gguf.GGUFReader` takes ~20 s on Gemma's file because it parses the 262k-entry vocabulary
element by element; reading the header ourselves takes well under a second. Tensors are
dequantised with `gguf.quants.dequantize` (the reference implementation of every format).
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import struct

import numpy as np

from gemini_embed.weights.validate import WeightImportError

# GGUF value types -> struct format of a scalar (8 = string and 9 = array are handled apart).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy order ([out, in] for a linear weight)
    ggml_type: int
    data: np.ndarray  # raw bytes (uint8), a view into the memory map

    def dequantize(self) -> np.ndarray:
        """float32 array of `shape`."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        qtype = GGMLQuantizationType(self.ggml_type)
        rows = self.data.reshape(*self.shape[:-1], -1)
        return np.asarray(dequantize(rows, qtype), np.float32).reshape(self.shape)


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.off, self.path = buf, 0, path

    def unpack(self, fmt: str):
        try:
            vals = struct.unpack_from("<" + fmt, self.buf, self.off)
        except struct.error as e:
            raise WeightImportError(f"{self.path}: truncated GGUF header at byte {self.off}") from e
        self.off += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str:
        n = self.unpack("Q")
        if self.off + n > len(self.buf):
            raise WeightImportError(f"{self.path}: truncated GGUF header at byte {self.off}")
        s = bytes(self.buf[self.off:self.off + n]).decode("utf-8")
        self.off += n
        return s

    def value(self, typ: int, key: str):
        if typ == 8:
            return self.string()
        if typ == 9:
            elem, count = self.unpack("I"), self.unpack("Q")
            if elem == 8:
                return [self.string() for _ in range(count)]
            if elem not in _SCALAR:
                raise WeightImportError(f"{self.path}: unsupported GGUF array element type {elem} for {key}")
            dtype = np.dtype(np.bool_) if elem == 7 else np.dtype("<" + _SCALAR[elem])
            if self.off + count * dtype.itemsize > len(self.buf):
                raise WeightImportError(f"{self.path}: truncated GGUF header in {key}")
            out = np.frombuffer(self.buf, dtype, count, self.off).copy()
            self.off += count * dtype.itemsize
            return out
        if typ not in _SCALAR:
            raise WeightImportError(f"{self.path}: unsupported GGUF value type {typ} for {key}")
        return self.unpack(_SCALAR[typ])


def _open(path):
    with open(path, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:  # empty file
            raise WeightImportError(f"{path}: empty file, not GGUF") from e


def _read_header(buf, path) -> tuple[_Cursor, int, dict]:
    cur = _Cursor(buf, path)
    magic, version, n_tensors, n_kv = cur.unpack("4sIQQ")
    if magic != b"GGUF" or version < 2:
        raise WeightImportError(f"{path}: not a GGUF v2+ file (magic={magic!r}, version={version})")
    meta = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("I"), key)
    return cur, n_tensors, meta


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, object]:
    """The key/value metadata (strings, scalars, lists of str, numpy arrays); tensors untouched."""
    return _read_header(_open(path), path)[2]


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, object], dict[str, GGUFTensor]]:
    """(metadata, tensors by name). Tensor data stays memory-mapped until dequantised."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    buf = _open(path)
    cur, n_tensors, meta = _read_header(buf, path)
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.unpack("Q") for _ in range(cur.unpack("I"))]
        infos.append((name, tuple(reversed(dims)), cur.unpack("I"), cur.unpack("Q")))
    align = int(meta.get("general.alignment", 32))
    start = (cur.off + align - 1) // align * align
    raw = np.frombuffer(buf, np.uint8)
    tensors = {}
    for name, shape, typ, offset in infos:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(typ)]
        nbytes = int(np.prod(shape)) // block * type_size
        begin = start + offset
        if begin + nbytes > len(raw):
            raise WeightImportError(f"{path}: truncated file: tensor {name!r} needs bytes {begin}..{begin + nbytes}, "
                                    f"the file has {len(raw)}")
        tensors[name] = GGUFTensor(name, shape, typ, raw[begin:begin + nbytes])
    return meta, tensors
