"""The recipe on Gemma 3 270M, sized for a 2-core CPU: pre-finetune -> two finetuned ingredients
that differ in mixture -> model soups. `python -m gemini_embed.recipe` runs it all (resumably):

    python -m gemini_embed.recipe --recipe experiments/gemma3_270m_recipe.py --workdir runs/recipe

One stage alone (the driver passes `--config.model.init_from` for stages that start from another):

    python -m gemini_embed.main --config experiments/gemma3_270m_recipe.py:prefinetune --workdir runs/recipe/prefinetune

Stages (train-only data; docs/recipe.md has the measured table):
  prefinetune   SQuAD article title -> paragraph and question -> paragraph: many noisy pairs, no hard negatives
  ft_sentences  from prefinetune: STS Benchmark train with its gold scores (CoSENT), SNLI dev triplets
                (contradiction = hard negative), Twitter URL paraphrases (headline non-paraphrase = hard negative)
  ft_mixed      from prefinetune: STS Benchmark train (CoSENT), SQuAD questions, docstring -> code, Twitter URL
The third run's settings (docs/recipe.md) are overrides of ft_sentences: rates 4,1,1, 360 steps,
lr 5e-5, optim.frozen=embedder (worse on the test split). Outside the driver, for the STS12-16 goal
(no STS Benchmark data, so those tasks stay unseen), each from prefinetune:
  ft_nli          SNLI dev triplets + Twitter URL paraphrases (2:1), 360 steps (the fifth run)
  ft_nli_distill  the same plus distillation of all-MiniLM-L6-v2's in-batch similarities (the sixth run)
and the multilingual stage, from ft_sentences:
  ft_multilingual the nine parallel datasets (X -> English) mixed 11:6 with ft_sentences' English sources
"""
import ml_collections

from experiments import tiny

STAGES = {  # name -> the stage whose final params it starts from (None: the raw LLM)
    "prefinetune": None,
    "ft_sentences": "prefinetune",
    "ft_mixed": "prefinetune",
}
SOUPS = {  # name -> (method, ingredients, dev tasks)
    "soup_uniform": ("uniform", ("ft_sentences", "ft_mixed"), "STSBenchmark"),
    "soup_greedy": ("greedy", ("ft_sentences", "ft_mixed"), "STSBenchmark"),
}
RAW = "gemma3-270m"
REFERENCES = ("all-minilm-l6-v2",)
EVAL_TASKS = "STSBenchmark,CoSQA,MRPC"
EVAL_ARGS = ("--max_length", "256")  # as the quickstart: CoSQA's longest snippets cost most


def get_config(stage: str = "prefinetune") -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.model = ml_collections.ConfigDict({"name": "gemma3-270m", "overrides": {}, "init_from": ""})
    c.train.global_batch_size = 16
    c.train.log_every = 5
    c.optim.warmup_steps = 10
    c.loss.temperature = 0.05
    c.loss.mrl_dims = (128, 256, 512, 768)
    c.eval.tasks = ""  # the driver evaluates every row on the same tasks
    if stage == "prefinetune":
        c.data.sources, c.data.rates = "squad-titles-train,squad-train", "1,1"
        c.data.query_len, c.data.positive_len = 32, 128
        c.train.steps, c.optim.lr = 40, 5e-5
    elif stage == "ft_sentences":
        c.data.sources, c.data.rates = "stsb-scored-train,snli-triplets-validation,twitter-url-train", "3,2,1"
        c.data.query_len, c.data.positive_len, c.data.num_negatives = 32, 32, 1
        c.train.steps, c.optim.lr = 120, 3e-5
    elif stage in ("ft_nli", "ft_nli_distill"):  # no STS Benchmark data: STS12-16 stay unseen (fifth run)
        c.data.sources, c.data.rates = "snli-triplets-validation,twitter-url-train", "2,1"
        c.data.query_len, c.data.positive_len, c.data.num_negatives = 32, 32, 1
        c.train.steps, c.optim.lr = 360, 3e-5
        if stage == "ft_nli_distill":  # plus all-MiniLM-L6-v2's in-batch similarities (sixth run)
            c.loss.distill_weight = 1.0
    elif stage == "ft_multilingual":  # from ft_sentences: English <-> X pairs of every parallel dataset,
        # with the English sentence sources kept in the mixture so STS Benchmark holds (multilingual_report.py)
        parallel = {"parallel-mediawiki-train": 2, "parallel-bible-train": 2, "parallel-mozilla-train": 1,
                    "parallel-rosetta-train": 1, "parallel-mafand-train": 1, "parallel-osm-website-train": 1,
                    "parallel-osm-id-train": 1, "parallel-wikipedia-android-train": 1, "parallel-udhr-train": 1}
        english = {"stsb-scored-train": 3, "snli-triplets-validation": 2, "twitter-url-train": 1}
        c.data.sources = ",".join([*parallel, *english])
        c.data.rates = ",".join(str(r) for r in [*parallel.values(), *english.values()])
        c.data.query_len, c.data.positive_len = 48, 48
        c.train.steps, c.optim.lr = 360, 3e-5
    elif stage == "ft_mixed":
        c.data.sources, c.data.rates = "stsb-scored-train,squad-train,code-docstring-train,twitter-url-train", "2,1,1,1"
        c.data.query_len, c.data.positive_len = 32, 96
        c.train.steps, c.optim.lr = 60, 3e-5
    else:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}, ft_nli, ft_nli_distill, "
                         "ft_multilingual")
    c.checkpoint.every = 120 if stage.startswith(("ft_nli", "ft_multilingual")) else 20
    return c
