"""Synthetic training pairs (llm/synthesis.py, the synth command): prompts, provenance, resume.

The generator here is a tiny *random* Gemma 3 with the real Gemma tokenizer: its text is noise,
but it decodes for real, so the files, seeds and resume logic are exercised end to end. Text
quality is measured with the real 270M in docs/synthetic.md, not here.
"""
import dataclasses
import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gemini_embed.data import sources as src
from gemini_embed.data.files import Problems
from gemini_embed.llm import decoding, synthesis
from gemini_embed.llm.decoding import Generator
from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3
from gemini_embed.tokenize import GemmaTokenizer
from gemini_embed.weights.packaged import gemma3_270m_gguf

import real_texts  # noqa: E402

SQUAD = f"{real_texts.DATA}/squad_v1.1_train/squad_v1.1_train.jsonl.gz"


@pytest.fixture(scope="module")
def generator():
    config = dataclasses.replace(GEMMA3_PRESETS["gemma3-tiny"], attention="causal")
    params = Gemma3(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool))
    return Generator(model=(config, params, GemmaTokenizer.from_gguf(gemma3_270m_gguf())), batch_size=4,
                     max_prompt_tokens=512, name="gemma3-tiny-random")


@functools.lru_cache(maxsize=1)
def _paragraphs():
    return list(synthesis.read_corpus(f"squad:{SQUAD}", Problems()))[:10]


def _items(n=10):
    return _paragraphs()[:n]


def test_prompts_come_from_training_examples_and_end_without_a_space():
    pool = synthesis.few_shot_examples("query", real_texts.DATA, n=20, seed=1)
    questions = {e["query"] for e in src.squad(SQUAD, Problems())}
    assert len(pool) == 20 and all(q in questions for _, q in pool)
    p = synthesis.prompt(synthesis.TEMPLATES["query"], pool[:2], "Some passage text.")
    assert p.count("Passage: ") == 3 and p.endswith("Passage: Some passage text.\nQuestion:")
    para = synthesis.few_shot_examples("paraphrase", real_texts.DATA, n=5)
    mrpc_train = open(f"{real_texts.DATA}/mrpc/train.tsv", encoding="utf-8").read()
    assert all(a in mrpc_train and b in mrpc_train for a, b in para)
    with pytest.raises(ValueError, match="unknown kind 'poem'"):
        synthesis.few_shot_examples("poem", real_texts.DATA)


def test_rows_are_generic_training_pairs_with_provenance(generator, tmp_path):
    out = tmp_path / "q.jsonl"
    pool = synthesis.few_shot_examples("query", real_texts.DATA, n=16)
    counts = synthesis.synthesize(generator, _items(), "query", out, examples=pool, max_new_tokens=8, seed=7,
                                  progress=False)
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert counts["written"] == len(rows) and counts["written"] + counts["empty"] + counts["copied"] == 10
    assert len(rows) >= 5
    prov = rows[0]["provenance"]
    assert prov["generator"] == "gemma3-tiny-random" and prov["template"] == "query-v1"
    assert prov["sampler"] == decoding.SAMPLER
    assert prov["temperature"] == 0.7 and prov["top_p"] == 0.95 and len(prov["shots_from_pool"]) == 3
    assert prov["seed"] == synthesis.row_seed(7, rows[0]["source_id"])
    items = {i: (t, x) for i, t, x in _items()}
    assert all(r["positive"] == items[r["source_id"]][1] and r["title"] == items[r["source_id"]][0] for r in rows)
    pairs = list(src.generic(out, Problems(on_error="fail")))  # the training reader takes the file as it is
    assert [p["query"] for p in pairs] == [r["query"] for r in rows]
    assert {p["task"] for p in pairs} == {"question answering"}


def test_resume_after_a_kill_equals_one_straight_run(generator, tmp_path):
    pool = synthesis.few_shot_examples("query", real_texts.DATA, n=16)
    kw = dict(examples=pool, max_new_tokens=8, seed=3, progress=False)
    straight = tmp_path / "straight.jsonl"
    synthesis.synthesize(generator, _items(), "query", straight, **kw)
    resumed = tmp_path / "resumed.jsonl"
    synthesis.synthesize(generator, _items(6), "query", resumed, **kw)  # the first chunks only
    text = resumed.read_text()
    resumed.write_text(text[:-20])  # killed mid-write: the last row is cut off
    counts = synthesis.synthesize(generator, _items(), "query", resumed, **kw)
    assert counts["skipped"] >= 1
    key = lambda path: sorted(path.read_text().splitlines())  # noqa: E731
    assert key(resumed) == key(straight)  # each item's sample depends on its own seed only
    again = synthesis.synthesize(generator, _items(), "query", resumed, **kw)
    assert again["written"] == 0 and key(resumed) == key(straight)
    with pytest.raises(ValueError, match=r"written with other settings \(temperature\)"):
        synthesis.synthesize(generator, _items(), "query", resumed, **{**kw, "temperature": 0.5})


def test_command_errors_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "gemini_embed.synth", *args, "--output", str(tmp_path / "o.jsonl")],
                              capture_output=True, text=True, timeout=300)
    p = run("--corpus", "tsv:x", "--kind", "query", "--n", "4")
    assert p.returncode == 2 and "is not FORMAT:PATH with FORMAT beir, squad, jsonl or lines" in p.stderr
    p = run("--corpus", f"lines:{tmp_path}/missing.txt", "--kind", "query", "--n", "4")
    assert p.returncode == 2 and "missing.txt does not exist" in p.stderr
    p = run("--corpus", f"squad:{SQUAD}", "--kind", "query", "--n", "0")
    assert p.returncode == 2 and "--n must be >= 1" in p.stderr


def test_human_counterpart_pairs_the_same_paragraphs_with_squad_questions(generator, tmp_path):
    out, human = tmp_path / "q.jsonl", tmp_path / "human.jsonl"
    pool = synthesis.few_shot_examples("query", real_texts.DATA, n=16)
    synthesis.synthesize(generator, _items(6), "query", out, examples=pool, max_new_tokens=4, progress=False)
    n = synthesis.human_counterpart(out, SQUAD, human)
    synth_rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    human_rows = [json.loads(ln) for ln in human.read_text().splitlines()]
    assert n == len(synth_rows) == len(human_rows) > 0
    by_paragraph = {}
    for e in src.squad(SQUAD, Problems()):
        by_paragraph.setdefault(e["positive"], set()).add(e["query"])
    for s, h in zip(synth_rows, human_rows):
        assert h["positive"] == s["positive"] and h["title"] == s["title"] and h["query"] in by_paragraph[s["positive"]]
