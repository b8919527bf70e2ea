"""Fine-tune all-MiniLM-L6-v2 (a BERT encoder, already a good embedder) on real training pairs on
local CPU devices, then compare STS Benchmark (test Spearman) and SciFact (test nDCG@10) before
and after. Its gain is small (0.8203 -> 0.8227 STSB, README): the project's main job is
experiments/quickstart.py, a decoder LLM turned into an embedder.

Training uses train splits only (SciFact train claims, STS Benchmark train pairs, MRPC train
paraphrases); evaluation uses the held-out test splits. See experiments/gemma3_270m_finetune.py
for the same job on Gemma 3 270M, which costs much more on a CPU.

    python -m gemini_embed.main --config experiments/minilm_finetune.py --workdir runs/minilm
"""
import ml_collections

from experiments import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.model = ml_collections.ConfigDict({"name": "all-minilm-l6-v2", "overrides": {}, "init_from": ""})
    c.data.sources = "scifact-train,stsb-train,mrpc-train"
    c.data.query_len = 48
    c.data.positive_len = 128
    c.train.steps = 40
    c.train.global_batch_size = 16
    c.train.log_every = 5
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 6
    c.loss.mrl_dims = (384,)
    c.loss.temperature = 0.05
    c.checkpoint.every = 20
    c.eval.tasks = "STSBenchmark,SciFact"
    return c
