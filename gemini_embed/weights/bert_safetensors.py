"""Import a HF BERT checkpoint (`config.json` + `model.safetensors`) into `BertEncoder` params.

    cfg, params = load_bert(minilm_l6_v2_dir())
    hidden = BertEncoder(cfg).apply(params, tokens, mask)  # [B, L, D]

Reads tensors with `safetensors` as NumPy (no pickle, no torch). HF Linear weights are
[out, in]; ours are [in, out] with the head axis split out of D for q/k/v and the output
projection. Names may carry a `bert.` prefix (BertFor* checkpoints) or not (BertModel).
The pooler and any MLM head (`pooler.*`, `cls.*`) are ignored; any other unused tensor is an
error, so a checkpoint with more layers than its config cannot load silently.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from gemini_embed.model.bert import BertConfig, abstract_params
from gemini_embed.weights.validate import WeightImportError, check_params, require

_IGNORED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$)")
_PREFIX = "bert."


def read_config(path: str | os.PathLike, dtype: Any = jnp.float32) -> BertConfig:
    """`BertConfig` from a HF `config.json`, with errors that name the file."""
    try:
        with open(path) as f:
            hf = json.load(f)
        return BertConfig.from_hf_config(hf, dtype=dtype)
    except (OSError, json.JSONDecodeError) as e:
        raise WeightImportError(f"{path}: cannot read BERT config ({e})") from e
    except KeyError as e:
        raise WeightImportError(f"{path}: BERT config lacks the field {e}") from e
    except ValueError as e:
        raise WeightImportError(f"{path}: {e}") from e


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as float32 NumPy arrays, `bert.` prefix stripped."""
    try:
        f = safe_open(str(path), framework="np")
    except Exception as e:  # SafetensorError (truncated / corrupt header) or OSError
        raise WeightImportError(f"{path}: not a readable safetensors file ({e})") from e
    tensors = {}
    for name in f.keys():
        try:
            t = f.get_tensor(name)
        except Exception as e:
            raise WeightImportError(f"{path}: cannot read tensor {name!r} ({e})") from e
        short = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
        if short in tensors:
            raise WeightImportError(f"{path}: tensor {short!r} appears both with and without {_PREFIX!r}")
        if not np.issubdtype(t.dtype, np.floating) and not _IGNORED.match(short):
            raise WeightImportError(f"{path}: tensor {name!r} has dtype {t.dtype}, expected floating point")
        tensors[short] = t if _IGNORED.match(short) else t.astype(np.float32)
    return tensors


def remap(tensors: dict[str, np.ndarray], cfg: BertConfig, source: str) -> dict[str, Any]:
    """HF BERT tensor names -> our `{"params": ...}` tree (NumPy float32)."""
    D, H, K, F = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        used.add(name)
        return require(tensors, name, shape, source)

    def linear(name: str, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        # HF nn.Linear: weight [out, in]; ours: kernel [in, out].
        w = take(f"{name}.weight", (n_out, n_in))
        return np.ascontiguousarray(w.T), take(f"{name}.bias", (n_out,))

    def norm(name: str) -> dict[str, np.ndarray]:
        return {"scale": take(f"{name}.weight", (D,)), "bias": take(f"{name}.bias", (D,))}

    params: dict[str, Any] = {"embed": {
        "word": take("embeddings.word_embeddings.weight", (cfg.vocab_size, D)),
        "position": take("embeddings.position_embeddings.weight", (cfg.max_position, D)),
        "token_type": take("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, D)),
        "norm": norm("embeddings.LayerNorm"),
    }}
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        attn = {}
        for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
            w, b = linear(f"{p}attention.self.{theirs}", D, D)
            attn[ours] = {"kernel": w.reshape(D, H, K), "bias": b.reshape(H, K)}  # [D,H,K], [H,K]
        w, b = linear(f"{p}attention.output.dense", D, D)
        attn["out"] = {"kernel": w.reshape(H, K, D), "bias": b}  # [H,K,D], [D]
        wi, bi = linear(f"{p}intermediate.dense", D, F)
        wo, bo = linear(f"{p}output.dense", F, D)
        params[f"layer_{i}"] = {
            "attn": attn,
            "attn_norm": norm(f"{p}attention.output.LayerNorm"),
            "mlp": {"wi": {"kernel": wi, "bias": bi}, "wo": {"kernel": wo, "bias": bo}},
            "mlp_norm": norm(f"{p}output.LayerNorm"),
        }
    unused = sorted(n for n in set(tensors) - used if not _IGNORED.match(n))
    if unused:
        raise WeightImportError(
            f"{source}: tensor(s) not used by a {cfg.num_layers}-layer BertEncoder: {', '.join(unused[:10])}"
            + (f" and {len(unused) - 10} more" if len(unused) > 10 else ""))
    return {"params": params}


def load_bert(folder: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[BertConfig, dict[str, Any]]:
    """(config, `{"params": ...}` of float32 NumPy arrays) from a HF BERT folder.

    `dtype` is the compute dtype recorded in the config; the params stay float32.
    Raises WeightImportError naming the file and tensor on any mismatch.
    """
    folder = pathlib.Path(folder)
    cfg = read_config(folder / "config.json", dtype=dtype)
    source = str(folder / "model.safetensors")
    params = remap(read_safetensors(source), cfg, source)
    check_params(params, abstract_params(cfg), source)
    return cfg, params


def hf_tensors(cfg: BertConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of `remap`: our tree -> BertModel's tensor names (Linear weights [out, in])."""
    p = params["params"] if "params" in params else params
    D = cfg.d_model
    f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    out = {"embeddings.word_embeddings.weight": p["embed"]["word"],
           "embeddings.position_embeddings.weight": p["embed"]["position"],
           "embeddings.token_type_embeddings.weight": p["embed"]["token_type"],
           "embeddings.LayerNorm.weight": p["embed"]["norm"]["scale"],
           "embeddings.LayerNorm.bias": p["embed"]["norm"]["bias"]}

    def linear(name, kernel, bias, n_in):
        out[f"{name}.weight"] = np.asarray(kernel).reshape(n_in, -1).T
        out[f"{name}.bias"] = np.asarray(bias).reshape(-1)

    for i in range(cfg.num_layers):
        layer, pre = p[f"layer_{i}"], f"encoder.layer.{i}."
        for ours in ("query", "key", "value"):
            linear(f"{pre}attention.self.{ours}", layer["attn"][ours]["kernel"], layer["attn"][ours]["bias"], D)
        linear(f"{pre}attention.output.dense", layer["attn"]["out"]["kernel"], layer["attn"]["out"]["bias"], D)
        linear(f"{pre}intermediate.dense", layer["mlp"]["wi"]["kernel"], layer["mlp"]["wi"]["bias"], D)
        linear(f"{pre}output.dense", layer["mlp"]["wo"]["kernel"], layer["mlp"]["wo"]["bias"], cfg.mlp_dim)
        for theirs, ours in (("attention.output.LayerNorm", "attn_norm"), ("output.LayerNorm", "mlp_norm")):
            out[f"{pre}{theirs}.weight"] = layer[ours]["scale"]
            out[f"{pre}{theirs}.bias"] = layer[ours]["bias"]
    return {k: f32(v) for k, v in out.items()}


def hf_config(cfg: BertConfig) -> dict[str, Any]:
    """config.json of a BertModel with `cfg`'s architecture (exact gelu, absolute positions)."""
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.mlp_dim, "max_position_embeddings": cfg.max_position,
            "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": "gelu",
            "position_embedding_type": "absolute", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "pad_token_id": 0}
