"""Shared recipe of the pod-scale configs (gemma3_<size>_pod.py): Gemma 3 embedding training at
realistic batch sizes, sequence length 512, bf16 compute over fp32 master params and Adam
moments, every transformer block rematerialised.

Two stages, picked with the config string (`--config experiments/gemma3_27b_pod.py:finetune`):
  prefinetune (default)  global batch 4096 of (title, passage) pairs, gradient cache
  finetune               global batch 1024 of (query, positive, hard negative) triplets, one pass

Nothing here needs a pod to check: `--compile_only --topology v5e:16x16` compiles the real step
(docs/scaling.md). For a real run the weights come from `model.name` set to a local Gemma 3
folder (HF safetensors + tokenizer.model) on the shared filesystem, e.g.
`--config.model.name=/mnt/shared/gemma-3-27b-pt`, and `data.root` points at the shared data.
"""

import ml_collections

from experiments import tiny

STAGES = {
    # stage: (global batch, grad-cache chunk of the global batch, hard negatives per row, steps, warmup)
    "prefinetune": (4096, 1024, 0, 20_000, 1_000),
    "finetune": (1024, 0, 1, 5_000, 300),
}


def pod_config(model: str, stage: str, *, lr: float, data: int = 1, fsdp: int = -1, tensor: int = 1,
               chunk: int | None = None, slice_name: str = "") -> ml_collections.ConfigDict:
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    batch, default_chunk, negatives, steps, warmup = STAGES[stage]
    c = tiny.get_config()
    c.model = ml_collections.ConfigDict({"name": model, "overrides": {"dtype": "bfloat16", "remat": True,
                                                                "scan_layers": True}, "init_from": ""})
    c.data.query_len = 512
    c.data.positive_len = 512
    c.data.num_negatives = negatives
    c.train.global_batch_size = batch
    c.train.grad_cache_chunk_size = default_chunk if chunk is None or not default_chunk else chunk
    c.train.steps = steps
    c.train.log_every = 50
    c.optim.lr = lr
    c.optim.warmup_steps = warmup
    c.loss.mrl_dims = (128, 256, 512, 768)
    c.loss.temperature = 0.02 if stage == "prefinetune" else 0.05
    c.checkpoint.every = 1000
    c.mesh = ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})
    c.pod = ml_collections.ConfigDict({"slice": slice_name})  # the TPU slice this config is sized for
    return c
