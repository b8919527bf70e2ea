"""Gemma 3 270M (bidirectional, mean pooling, projection 640 -> 768, MRL 128..768) fine-tuned on
real training pairs (train splits only), evaluated before and after on held-out test splits.

    python -m gemini_embed.main --config experiments/gemma3_270m_finetune.py --workdir runs/gemma3_270m
"""
import ml_collections

from experiments import minilm_finetune


def get_config() -> ml_collections.ConfigDict:
    c = minilm_finetune.get_config()
    c.model = ml_collections.ConfigDict({"name": "gemma3-270m", "overrides": {}, "init_from": ""})
    c.data.sources = "scifact-train,stsb-train,mrpc-train,banking77-train"
    c.data.query_len = 48
    c.data.positive_len = 128
    c.train.global_batch_size = 16  # fits this 24 GiB CPU machine: ~5 GiB of activations per step
    c.train.grad_cache_chunk_size = 0
    c.optim.lr = 2e-5
    c.loss.mrl_dims = (128, 256, 512, 768)
    return c
