"""Tiny random Gemma-architecture encoder with the real Gemma 3 tokenizer, on real training pairs.

A step takes well under a second on CPU; used by the tests.

    python -m gemini_embed.main --config experiments/tiny.py --workdir runs/tiny
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"name": "gemma3-tiny", "overrides": {}, "init_from": ""})
    # Data keys: docs/data.md. rates: comma list (uniform if unset); seed: train.seed if unset; root: the
    # raw data (default $GEMINI_EMBED_DATA or ../shared/data); dir: prepared tfds data (default
    # $GEMINI_EMBED_TFDS or ~/.cache/gemini_embed/tfds).
    c.data = ml_collections.ConfigDict({
        "sources": "scifact-train,stsb-train,mrpc-train,banking77-train",
        "rates": placeholder(str), "seed": placeholder(int), "query_len": 32, "positive_len": 64,
        "num_negatives": 0, "on_error": "skip", "allow_test_split": False, "root": "", "dir": "", "threads": 2,
    })
    c.train = ml_collections.ConfigDict({
        "steps": 20, "global_batch_size": 16, "grad_cache_chunk_size": 0, "log_every": 1, "seed": 0,
        "max_bad_steps": 5,
    })
    c.optim = ml_collections.ConfigDict({"lr": 1e-3, "warmup_steps": 5, "decay": "cosine", "weight_decay": 0.01,
                                         "clip_norm": 1.0, "frozen": ()})
    c.loss = ml_collections.ConfigDict({"temperature": 0.05, "learn_temperature": False, "mrl_dims": (16, 32),
                                       "cosent_temperature": 0.05,
                                       # > 0: distil the teacher's in-batch similarities (docs/recipe.md)
                                       "distill_weight": 0.0, "distill_teacher": "all-minilm-l6-v2",
                                       "distill_temperature": 0.05})
    c.checkpoint = ml_collections.ConfigDict({"every": 10, "keep": 3})
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.eval = ml_collections.ConfigDict({"tasks": ""})
    return c
