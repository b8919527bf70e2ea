"""Gemma 3 weights from GGUF (dequantised with `gguf`) or a Hugging Face safetensors folder.

Both formats are read as plain tensors (no pickle, no code from the checkpoint), renamed to
one canonical per-layer layout, then placed into our param tree with every shape checked.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3Config, stack_layers
from gemini_embed.weights.gguf_file import read_gguf
from gemini_embed.weights.validate import WeightImportError, require

# canonical name -> (GGUF name, HF name); "{i}" is the layer index.
_LAYER_NAMES = {
    "q": ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    "k": ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    "v": ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    "o": ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    "q_norm": ("blk.{i}.attn_q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight"),
    "k_norm": ("blk.{i}.attn_k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight"),
    "pre_attn_norm": ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    "post_attn_norm": ("blk.{i}.post_attention_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    "pre_mlp_norm": ("blk.{i}.ffn_norm.weight", "model.layers.{i}.pre_feedforward_layernorm.weight"),
    "post_mlp_norm": ("blk.{i}.post_ffw_norm.weight", "model.layers.{i}.post_feedforward_layernorm.weight"),
    "gate": ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    "up": ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    "down": ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
}
_GLOBAL_NAMES = {
    "embedding": ("token_embd.weight", "model.embed_tokens.weight"),
    "final_norm": ("output_norm.weight", "model.norm.weight"),
}


def build_params(get, c: Gemma3Config, source: str) -> dict:
    """Our param tree from `get(canonical_name, layer, shape)`, which returns float32 tensors in
    the checkpoint convention: linear weights [out, in], norm weights `w` (applied as 1 + w)."""
    D, N, G, K, F = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim
    params = {"embedder": {"embedding": get("embedding", None, (c.vocab_size, D))},
              "final_norm": {"scale": get("final_norm", None, (D,))}}
    for i in range(c.num_layers):
        g = lambda name, shape: get(name, i, shape)  # noqa: E731
        params[f"layer_{i}"] = {
            "attn": {
                "q": {"kernel": g("q", (N * K, D)).T.reshape(D, N, K)},
                "k": {"kernel": g("k", (G * K, D)).T.reshape(D, G, K)},
                "v": {"kernel": g("v", (G * K, D)).T.reshape(D, G, K)},
                "o": {"kernel": g("o", (D, N * K)).T.reshape(N, K, D)},
                "q_norm": {"scale": g("q_norm", (K,))},
                "k_norm": {"scale": g("k_norm", (K,))},
            },
            "mlp": {"gate": {"kernel": g("gate", (F, D)).T},
                    "up": {"kernel": g("up", (F, D)).T},
                    "down": {"kernel": g("down", (D, F)).T}},
            **{n: {"scale": g(n, (D,))} for n in ("pre_attn_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm")},
        }
    if c.scan_layers:  # the layer scan's layout: one tree under "layers", leading dim = layer
        params = stack_layers(params, c.num_layers)
    return {"params": params}


def hf_tensors(c: Gemma3Config, params: dict) -> dict[str, np.ndarray]:
    """The inverse of `build_params` for the HF layout: {HF tensor name: float32 array} of
    Gemma3TextModel (linear weights [out, in], norm weights `w` as transformers applies 1 + w)."""
    p = params["params"] if "params" in params else params
    if "layers" in p:  # scanned: one tree with a leading layer dim
        p = {**{k: v for k, v in p.items() if k != "layers"},
             **{f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], p["layers"]) for i in range(c.num_layers)}}
    D = c.d_model
    f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    out = {_GLOBAL_NAMES["embedding"][1]: f32(p["embedder"]["embedding"]),
           _GLOBAL_NAMES["final_norm"][1]: f32(p["final_norm"]["scale"])}
    for i in range(c.num_layers):
        layer = p[f"layer_{i}"]
        a, m = layer["attn"], layer["mlp"]
        tensors = {
            "q": a["q"]["kernel"].reshape(D, -1).T, "k": a["k"]["kernel"].reshape(D, -1).T,
            "v": a["v"]["kernel"].reshape(D, -1).T, "o": a["o"]["kernel"].reshape(-1, D).T,
            "q_norm": a["q_norm"]["scale"], "k_norm": a["k_norm"]["scale"],
            "gate": m["gate"]["kernel"].T, "up": m["up"]["kernel"].T, "down": m["down"]["kernel"].T,
            **{n: layer[n]["scale"] for n in ("pre_attn_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm")}}
        out |= {_LAYER_NAMES[n][1].format(i=i): f32(t) for n, t in tensors.items()}
    return {k.removeprefix("model."): v for k, v in out.items()}  # Gemma3TextModel's own names


def hf_config(c: Gemma3Config, max_length: int) -> dict:
    """config.json of a bidirectional Gemma3TextModel (EmbeddingGemma's settings). The file holds
    the window itself: transformers builds its exclusive bound (window // 2 + 1) from it."""
    if c.query_pre_attn_scalar != int(c.query_pre_attn_scalar):
        raise ValueError(f"query_pre_attn_scalar {c.query_pre_attn_scalar} is not an integer: transformers' "
                         f"Gemma3TextConfig only takes integers")
    rope_global = {"rope_type": "default", "rope_theta": c.rope_global_base}
    if c.rope_global_scale != 1.0:
        rope_global = {"rope_type": "linear", "factor": c.rope_global_scale, "rope_theta": c.rope_global_base}
    return {
        "architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "torch_dtype": "float32",
        "vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim,
        "intermediate_size": c.mlp_dim, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": max(max_length, 2048), "rms_norm_eps": c.norm_eps,
        "query_pre_attn_scalar": int(c.query_pre_attn_scalar), "sliding_window": c.sliding_window,
        "layer_types": ["full_attention" if c.is_global(i) else "sliding_attention" for i in range(c.num_layers)],
        "sliding_window_pattern": c.global_every,
        "rope_parameters": {"full_attention": rope_global,
                            "sliding_attention": {"rope_type": "default", "rope_theta": c.rope_local_base}},
        "use_bidirectional_attention": True, "attention_bias": False, "attention_dropout": 0.0,
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": True,
    }


# ---------------------------------------------------------------- GGUF

def gemma3_config_from_gguf(meta: dict, base: Gemma3Config | None = None) -> Gemma3Config:
    """Architecture from GGUF metadata; what the file lacks (local RoPE base, layer pattern) from `base`."""
    arch = meta.get("general.architecture")
    if arch != "gemma3":
        raise WeightImportError(f"GGUF architecture is {arch!r}, expected 'gemma3'")
    base = base or GEMMA3_PRESETS["gemma3-270m"]

    def field(key, default=None):
        value = meta.get("gemma3." + key, default)
        if value is None:
            raise WeightImportError(f"GGUF metadata lacks gemma3.{key}")
        return value

    head_dim = int(field("attention.key_length"))
    return dataclasses.replace(
        base,
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        d_model=int(field("embedding_length")),
        num_layers=int(field("block_count")),
        num_heads=int(field("attention.head_count")),
        num_kv_heads=int(field("attention.head_count_kv")),
        head_dim=head_dim,
        mlp_dim=int(field("feed_forward_length")),
        sliding_window=int(field("attention.sliding_window", base.sliding_window)),
        rope_global_base=float(field("rope.freq_base", base.rope_global_base)),
        norm_eps=float(field("attention.layer_norm_rms_epsilon", base.norm_eps)),
        query_pre_attn_scalar=float(head_dim),
    )


def load_gemma3_gguf(path, **overrides) -> tuple[Gemma3Config, dict]:
    """(config, params) from a Gemma 3 GGUF file. Quantised tensors are dequantised to float32."""
    path = pathlib.Path(path)
    meta, tensors = read_gguf(path)
    config = dataclasses.replace(gemma3_config_from_gguf(meta), **overrides)

    def get(name, layer, shape):
        key = (_GLOBAL_NAMES if layer is None else _LAYER_NAMES)[name][0].format(i=layer)
        if key not in tensors:
            raise WeightImportError(f"{path}: missing tensor {key!r} (expected shape {shape})")
        require(tensors, key, shape, str(path))  # checks the shape before dequantising
        w = tensors[key].dequantize()
        # llama.cpp stores Gemma norm weights as 1 + w.
        return w - 1.0 if key.endswith("norm.weight") else w

    return config, build_params(get, config, str(path))


# ---------------------------------------------------------------- Hugging Face safetensors folder

def _first_global(layer_types) -> int | None:
    """The layer pattern's period from `layer_types` (1 + the first full-attention layer)."""
    return layer_types.index("full_attention") + 1 if layer_types and "full_attention" in layer_types else None


def gemma3_config_from_hf(cfg: dict, base: Gemma3Config | None = None) -> Gemma3Config:
    cfg = cfg.get("text_config", cfg)
    base = base or GEMMA3_PRESETS["gemma3-270m"]
    rope = cfg.get("rope_parameters") or {}
    global_rope = rope.get("full_attention", {})
    local_rope = rope.get("sliding_attention", {})
    scaling = cfg.get("rope_scaling") or {}
    c = dataclasses.replace(
        base,
        vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"], num_kv_heads=cfg["num_key_value_heads"],
        head_dim=cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]),
        mlp_dim=cfg["intermediate_size"],
        sliding_window=cfg.get("sliding_window") or base.sliding_window,
        global_every=cfg.get("sliding_window_pattern") or _first_global(cfg.get("layer_types")) or base.global_every,
        query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", base.query_pre_attn_scalar)),
        rope_global_base=float(global_rope.get("rope_theta", cfg.get("rope_theta", base.rope_global_base))),
        rope_local_base=float(local_rope.get("rope_theta", cfg.get("rope_local_base_freq", base.rope_local_base))),
        rope_global_scale=float(global_rope.get("factor", scaling.get("factor", 1.0))),
        norm_eps=float(cfg.get("rms_norm_eps", base.norm_eps)),
    )
    # A bidirectional config.json holds the window itself too: transformers keeps window // 2 + 1
    # (an exclusive bound) in memory and writes the window back (Gemma3TextConfig.to_dict).
    layer_types = cfg.get("layer_types")
    if layer_types:
        want = ["full_attention" if c.is_global(i) else "sliding_attention" for i in range(c.num_layers)]
        if list(layer_types) != want:
            raise WeightImportError(f"config.json layer_types {layer_types} do not follow one global layer "
                                    f"every {c.global_every}; this layout is not supported")
    return c


def load_gemma3_hf(folder, **overrides) -> tuple[Gemma3Config, dict]:
    """(config, params) from a Hugging Face folder: config.json + *.safetensors (sharded or not)."""
    from safetensors import safe_open

    folder = pathlib.Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise WeightImportError(f"{folder}: no config.json")
    config = dataclasses.replace(gemma3_config_from_hf(json.loads(cfg_path.read_text())), **overrides)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightImportError(f"{folder}: no *.safetensors file")
    handles = {}
    for f in files:
        try:
            h = safe_open(str(f), framework="np")
        except Exception as e:
            raise WeightImportError(f"{f}: cannot read as safetensors ({type(e).__name__}: {e})") from e
        for key in h.keys():
            # Multimodal checkpoints nest the text model under `language_model`; a text model has no prefix.
            name = key.replace("model.language_model.", "model.").replace("language_model.model.", "model.")
            handles[name if name.startswith("model.") else "model." + name] = (h, key)  # Gemma3TextModel: bare

    class _Lazy(dict):  # `require` checks names and shapes; tensors are read only when used
        def __getitem__(self, k):
            h, key = handles[k]
            return h.get_tensor(key).astype(np.float32)

        def __contains__(self, k):
            return k in handles

    lazy = _Lazy()

    def get(name, layer, shape):
        key = (_GLOBAL_NAMES if layer is None else _LAYER_NAMES)[name][1].format(i=layer)
        if key not in lazy:
            raise WeightImportError(f"{folder}: missing tensor {key!r} (expected shape {shape})")
        return require({key: lazy[key]}, key, shape, str(folder))

    return config, build_params(get, config, str(folder))
