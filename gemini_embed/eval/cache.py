"""On-disk embedding cache: re-evaluating a model skips re-embedding what it already embedded.

Layout: `ROOT/<model fingerprint>/<task>/<side>-<prompt>-d<dim>-<content hash>.npy`. The
fingerprint names the model and hashes its config and params, so a retrained (or differently
configured) model never reads stale vectors; the content hash covers the texts, titles and
prompt, so a changed data file misses too. Files are written to a temporary name in chunks
(a memory-mapped .npy, so a corpus larger than RAM is never held whole) and renamed into
place, and read back memory-mapped: the sharded top-k then streams them block by block.

ROOT is `cache_dir`, else $GEMINI_EMBED_CACHE, else ~/.cache/gemini_embed/embeddings.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

ENV_VAR = "GEMINI_EMBED_CACHE"
log = logging.getLogger(__name__)
CHUNK = 65536  # texts embedded per call when filling a cache file: bounds host memory


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`cache_dir`, else $GEMINI_EMBED_CACHE, else ~/.cache/gemini_embed/embeddings."""
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_VAR) or pathlib.Path.home() / ".cache" / "gemini_embed" / "embeddings"
    return pathlib.Path(cache_dir).expanduser()


def _safe(name: str) -> str:
    """A path component: letters, digits, '._-' kept, the rest '_'; long names shortened + hashed."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "_"
    return out if len(out) <= 80 else f"{out[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def params_digest(params) -> str:
    """sha256 over every param leaf (path, dtype, shape, bytes), in a fixed order."""
    import jax

    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda x: jax.tree_util.keystr(x[0])):
        arr = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def model_fingerprint(embedder) -> str:
    """`<name>-<hash>` of an Embedder: name, config, max length, prompt use, tokenizer type, params."""
    h = hashlib.sha256()
    h.update(repr((embedder.name, embedder.config, embedder.max_length, embedder.uses_prompts,
                   type(embedder.tokenizer).__name__)).encode())
    h.update(params_digest(embedder.params).encode())
    return f"{_safe(embedder.name)}-{h.hexdigest()[:16]}"


def _content_hash(texts: Sequence[str], titles: Sequence[str | None] | None, prompt: str | None) -> str:
    h = hashlib.sha256(repr(prompt).encode())
    for i, t in enumerate(texts):
        title = None if titles is None else titles[i]
        h.update(b"\x00" + repr(title).encode() + b"\x01" + t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]


class EmbeddingCache:
    """Embeddings of one model, stored per task. `wrap(encode, task)` gives a caching encode.

    Counters `hits` and `misses` count encode calls answered from disk and computed.
    """

    def __init__(self, fingerprint: str, dim: int, cache_dir: str | os.PathLike | None = None):
        if not fingerprint:
            raise ValueError("fingerprint must be a non-empty string (see model_fingerprint)")
        self.dir = cache_root(cache_dir) / _safe(fingerprint)
        self.dim = int(dim)
        self.hits = 0
        self.misses = 0

    def path(self, task: str, texts: Sequence[str], titles=None, prompt: str | None = None) -> pathlib.Path:
        # the side is a readable label only: the content hash is what keeps files apart (documents
        # of a model without prompts are labelled "query", as both sides are plain text then)
        side = "corpus" if titles is not None or prompt == "document" else "query"
        name = f"{side}-{_safe(str(prompt))}-d{self.dim}-{_content_hash(texts, titles, prompt)}.npy"
        return self.dir / _safe(task) / name

    def wrap(self, encode: Callable[..., np.ndarray], task_name: str) -> Callable[..., np.ndarray]:
        """`encode(texts, task=None, titles=None)` that reads and writes this cache for the
        evaluation task `task_name` (`task` stays the Embedder's prompt task)."""

        def cached(texts, task=None, titles=None):
            texts = list(texts)
            path = self.path(task_name, texts, titles, task)
            if path.exists():
                try:
                    arr = np.load(path, mmap_mode="r")
                except (ValueError, OSError, EOFError) as e:  # truncated or garbled (a full disk, a copy cut short)
                    log.warning("embedding cache file %s is unreadable (%s); embedding again", path, e)
                    arr = None
                if arr is not None and arr.shape == (len(texts), self.dim) and arr.dtype == np.float32:
                    self.hits += 1
                    return arr
                path.unlink()  # unreadable, or of another shape: it cannot be ours; recompute it
            self.misses += 1
            return self._fill(path, encode, texts, titles, task)

        return cached

    def _fill(self, path: pathlib.Path, encode, texts, titles, prompt) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(texts), self.dim))
            for s in range(0, len(texts), CHUNK):
                chunk = texts[s:s + CHUNK]
                kwargs = {"task": prompt} if titles is None else {"task": prompt, "titles": list(titles[s:s + CHUNK])}
                emb = np.asarray(encode(chunk, **kwargs), dtype=np.float32)
                if emb.shape != (len(chunk), self.dim):
                    raise ValueError(f"encode returned shape {emb.shape} for {len(chunk)} texts; the cache "
                                     f"expects [N, {self.dim}]")
                out[s:s + len(chunk)] = emb
            out.flush()
            del out
            os.replace(tmp, path)  # atomic: readers see no file or the whole file
        finally:
            if tmp.exists():
                tmp.unlink()
        return np.load(path, mmap_mode="r")
