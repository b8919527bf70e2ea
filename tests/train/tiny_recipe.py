"""A two-stage recipe on the tiny model for tests/train/test_recipe.py (seconds per stage)."""
from experiments import tiny

STAGES = {"stage1": None, "stage2a": "stage1", "stage2b": "stage1"}
SOUPS = {"soup": ("greedy", ("stage2a", "stage2b"), "STSBenchmark")}
RAW = "gemma3-tiny"
REFERENCES = ()
EVAL_TASKS = "STSBenchmark"


def get_config(stage: str = "stage1"):
    c = tiny.get_config()
    c.train.steps, c.checkpoint.every = 2, 2
    c.data.sources = {"stage1": "squad-titles-train", "stage2a": "stsb-train", "stage2b": "twitter-url-train"}[stage]
    return c
