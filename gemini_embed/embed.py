"""The jitted embed function and the Embedder API.

One pure function `(params, tokens [B, L], mask [B, L]) -> embeddings [B, E]` is jitted with
its batch sharded over all local devices. Inputs are sorted by length and padded to a small
fixed set of (rows, length) buckets, so the number of compilations stays bounded whatever
the inputs; the output order is restored.
"""
from __future__ import annotations

import math
import pathlib
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gemini_embed import quantize, sharding
from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig
from gemini_embed.normalize import l2_normalize, mrl_truncate
from gemini_embed.pretrained import resolve
from gemini_embed.tokenize import apply_prompt

MIN_BUCKET = 16
TOKENS_PER_ROW = 512  # batches of longer texts get fewer rows: memory stays bounded


def length_buckets(max_length: int) -> list[int]:
    """16, 24, 32, 48, 64, 96, ... (steps of x1.5 and x4/3) below max_length, then max_length.

    Finer than powers of two: padding wastes at most a third of a batch instead of half, for
    about twice as many (still few) compiled shapes.
    """
    out, n = [], MIN_BUCKET
    while n < max_length:
        out.append(n)
        n = n * 3 // 2 if (n & (n - 1)) == 0 else n * 4 // 3  # 16 -> 24 -> 32 -> 48 -> 64 ...
    return out + [max_length]


def make_embed_fn(model: EmbeddingModel, mesh, params_sharding):
    """The jitted embed function: params sharded by the logical rules, batch over ('data', 'fsdp')."""
    batch = sharding.batch_sharding(mesh, 2)

    def apply(params, tokens, mask):
        with sharding.batch_sharded_activations(mesh):  # with FSDP params: gather weights, not activations
            return model.apply(params, tokens, mask)

    return jax.jit(apply, in_shardings=(params_sharding, batch, batch), out_shardings=sharding.batch_sharding(mesh, 2))


class Embedder:
    """A pretrained embedding model ready to embed text: tokenizer + params + jitted function.

    Build with `Embedder.from_pretrained(name_or_dir, **overrides)`.
    """

    def __init__(self, config: EmbeddingModelConfig, params: Any, tokenizer, *, max_length: int,
                 uses_prompts: bool, name: str = "model", mesh=None, provenance: dict | None = None):
        self.config = config
        self.provenance = provenance  # where a trained model came from (train/provenance.py), else None
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.uses_prompts = uses_prompts
        self.name = name
        self.mesh = mesh if mesh is not None else sharding.make_mesh(data=-1, devices=jax.local_devices())
        self.model = EmbeddingModel(config)
        abstract = jax.eval_shape(self.model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                  jnp.ones((1, 8), bool))
        shardings = sharding.param_shardings(abstract, self.mesh)
        self.params = jax.device_put(params, shardings)
        self._fn = make_embed_fn(self.model, self.mesh, shardings)
        self._shapes_seen: set[tuple[int, int]] = set()
        self.calibration: np.ndarray | None = None  # [N, dim] embeddings: int8/uint8 ranges (`calibrate`)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, mesh=None, **overrides) -> "Embedder":
        """A registered name ("gemma3-270m", "all-minilm-l6-v2") or a local directory.

        Keyword overrides change the model's config, e.g. `projection=None`, `max_length=2048`,
        `mrl_dims=(128, 768)`, `dtype="bfloat16"`, `attention="causal"`. A trained model (a workdir or
        export) keeps the head it was trained with: only `max_length` and encoder fields apply.
        `mesh`: the devices to embed on (default all local devices; each holds a copy of the
        replicated params, so several simulated CPU devices multiply their host memory).
        """
        p = resolve(name_or_path, **overrides)
        out = cls(p.config, p.params, p.tokenizer, max_length=p.max_length, uses_prompts=p.uses_prompts, name=p.name,
                  mesh=mesh, provenance=p.provenance)
        saved = pathlib.Path(name_or_path) / quantize.CALIBRATION_FILE
        if saved.is_file():  # written by `calibrate(..., save_to=)`
            out.calibration = np.load(saved)
        return out

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.output_dim

    @property
    def mrl_dims(self) -> tuple[int, ...]:
        """The Matryoshka dims the model was trained for (`embed(dim=...)`; any 1..dim works)."""
        return tuple(self.config.mrl_dims)

    @property
    def num_compilations(self) -> int:
        """Distinct input shapes run so far: each compiled once."""
        return len(self._shapes_seen)

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: Sequence[str], task: str | None = None, dim: int | None = None,
              batch_size: int = 64, titles: Sequence[str | None] | None = None,
              progress: bool | None = None, precision: str = "float32",
              ranges: np.ndarray | None = None) -> np.ndarray:
        """L2-normalised float32 embeddings [len(texts), dim], in input order.

        task: None = raw text; a query task name ("search result", ...) = `task: {task} | query: {text}`;
        "document" = `title: {title or none} | text: {text}`. Models trained without prompts
        (uses_prompts=False) ignore `task` for formatting and join titles to the text.
        precision: "int8" / "uint8" ([N, dim] levels of the calibration `ranges` [2, dim], by default
        those of the model's `calibration` embeddings at this dim) or "binary" / "ubinary"
        ([N, ceil(dim / 8)] packed sign bits); see `gemini_embed.quantize`.
        """
        quantize.check_precision(precision)
        dim = self.dim if dim is None else dim
        for name, value in (("dim", dim), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 1 <= dim <= self.dim:
            raise ValueError(f"dim={dim!r} is outside this model's range 1..{self.dim} "
                             f"(Matryoshka dims it was trained for: {list(self.config.mrl_dims)})")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string: wrap it in a list")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if titles is not None and len(titles) != len(texts):
            raise ValueError(f"got {len(titles)} titles for {len(texts)} texts")
        if not texts:
            return np.zeros((0, dim), np.float32)
        if not self.uses_prompts:
            apply_prompt([], task)  # a model without prompts ignores the task, but a misspelt one is an error
        prompted = apply_prompt(texts, task if self.uses_prompts else None, titles)
        ids, truncated = self.tokenizer.encode(prompted, self.max_length)
        if any(truncated):
            n = int(np.sum(truncated))
            warnings.warn(f"{n} of {len(texts)} text(s) exceed max_length={self.max_length} tokens and were "
                          f"truncated (first: texts[{int(np.argmax(truncated))}])", stacklevel=2)
        out = self._embed_ids(ids, batch_size, progress)
        out = out if dim == self.dim else mrl_truncate(out, dim)
        if precision in ("int8", "uint8") and ranges is None:
            if self.calibration is None:
                raise ValueError(f"precision={precision!r} needs calibration ranges: call calibrate(texts) first, "
                                 "or pass ranges=")
            ranges = quantize.ranges_at(self.calibration, dim)
        return quantize.quantize(out, precision, ranges)

    def calibrate(self, texts: Sequence[str], task: str | None = None, save_to: str | None = None,
                  batch_size: int = 64) -> np.ndarray:
        """Embed `texts` (a few thousand varied texts, not the evaluation set) as the calibration set
        of int8/uint8 `embed`; with `save_to` (a model folder) also write them there
        (quantization_calibration.npy), where `from_pretrained` finds them. Returns [N, dim]."""
        self.calibration = self.embed(texts, task=task, batch_size=batch_size)
        quantize.calibration_ranges(self.calibration)  # checks there are >= 2
        if save_to is not None:
            np.save(pathlib.Path(save_to) / quantize.CALIBRATION_FILE, self.calibration)
        return self.calibration

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix [N, M] of embeddings a [N, D] and b [M, D] (any scale)."""
        a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embedding sizes differ: {a.shape} vs {b.shape}")
        return l2_normalize(a) @ l2_normalize(b).T

    def _embed_ids(self, ids: list[list[int]], batch_size: int, progress: bool | None) -> np.ndarray:
        n_dev = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths share a batch
        buckets = length_buckets(self.max_length)
        # Rows per call: the batch size (or the next power of two for a small input), fewer for
        # long buckets so a batch holds at most batch_size x 512 tokens; a multiple of devices.
        # One rows value per length bucket keeps the compilations bounded.
        base = min(batch_size, 1 << max(0, math.ceil(math.log2(len(ids)))))

        def rows_for(length: int) -> int:
            rows = min(base, 1 << int(math.log2(max(1, batch_size * TOKENS_PER_ROW // length))))
            return max(n_dev, rows // n_dev * n_dev)

        batches, s = [], 0
        while s < len(ids):
            length = next(b for b in buckets if b >= lengths[order[s]])
            rows = rows_for(length)
            batches.append((order[s:s + rows], rows, length))
            s += rows
        out = np.empty((len(ids), self.dim), np.float32)
        show = progress if progress is not None else len(batches) >= 20
        for idx, rows, length in tqdm(batches, desc=f"embed {self.name}", unit="batch", disable=not show):
            tokens = np.full((rows, length), self.tokenizer.pad_id, np.int32)
            mask = np.zeros((rows, length), bool)
            for r, i in enumerate(idx):
                tokens[r, :lengths[i]] = ids[i]
                mask[r, :lengths[i]] = True
            self._shapes_seen.add((rows, length))
            emb = self._fn(self.params, tokens, mask)
            out[idx] = np.asarray(emb)[:len(idx)]
        return out
