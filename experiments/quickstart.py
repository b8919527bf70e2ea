"""Quickstart: Gemma 3 270M, a decoder LLM, becomes an embedding model on local CPU devices.

Raw Gemma 3 270M (bidirectional attention, mean pooling, a random projection to 768 with MRL dims
128..768) is evaluated on STS Benchmark (test) and CoSQA (code retrieval), fine-tuned on
train-only data, and evaluated again: the NCE loss over in-batch negatives on Twitter URL
paraphrases and Python docstring -> function pairs, and CoSENT on the STS Benchmark train pairs
with their gold scores (the NCE on its >= 4 pairs alone has nothing left to learn after a few
steps: docs/recipe.md). Measured wall time and scores: README.md.

    python -m gemini_embed.main --config experiments/quickstart.py --workdir runs/quickstart
"""
import ml_collections

from experiments import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.model = ml_collections.ConfigDict({"name": "gemma3-270m", "overrides": {"max_length": 256},
                                         "init_from": ""})  # CoSQA's longest snippets cost the most
    c.data.sources = "stsb-scored-train,twitter-url-train,code-docstring-train"
    c.data.rates = "3,2,1"
    c.data.query_len = 32
    c.data.positive_len = 48
    c.train.steps = 40
    c.train.global_batch_size = 16
    c.train.log_every = 4
    c.optim.lr = 5e-5
    c.optim.warmup_steps = 4
    c.loss.temperature = 0.05
    c.loss.mrl_dims = (128, 256, 512, 768)
    c.checkpoint.every = 20
    c.eval.tasks = "STSBenchmark,CoSQA"
    return c
