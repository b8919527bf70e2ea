"""Filtering of synthetic pairs (llm/filtering.py, the filter_pairs command), on real models:
all-minilm-l6-v2 as the round-trip embedder, Gemma 3 270M as the likelihood scorer."""
import json
import subprocess
import sys

import numpy as np
import pytest

from gemini_embed.llm import filtering

ROWS = [  # the 3rd, 5th and 6th queries are about another row's passage; the 4th repeats the 1st
    {"query": "Where is the Eiffel Tower?", "positive": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
     "title": "Eiffel Tower", "task": "question answering"},
    {"query": "What do bees make?", "positive": "Honey bees produce honey from the nectar of flowers and store it in wax combs.",
     "title": "Honey bee", "task": "question answering"},
    {"query": "What do honey bees produce from nectar?", "positive": "Python is a programming language that emphasises readable code.",
     "title": "Python", "task": "question answering"},
    {"query": "where is the eiffel tower", "positive": "The tower was the tallest man-made structure until 1930.",
     "title": "Eiffel Tower", "task": "question answering"},
    {"query": "Which iron tower stands in Paris?", "positive": "Photosynthesis turns light, water and carbon dioxide into sugar in plants.",
     "title": "Photosynthesis", "task": "question answering"},
    {"query": "What language emphasises readable code?", "positive": "Rivers carry water from mountains to the sea.",
     "title": "River", "task": "question answering"},
]


def test_duplicates_by_text_and_by_cosine():
    qs = ["What is X?", "what is x", "Another one", "Near copy", "Far"]
    emb = np.array([[1, 0], [1, 0], [0, 1], [0.05, 0.99875], [-1, 0]], np.float32)
    assert filtering.duplicates(qs, None, None).tolist() == [False, True, False, False, False]
    # "Near copy" has cosine 0.99875 with "Another one"; a text duplicate is not compared by cosine
    assert filtering.duplicates(qs, emb, 0.99).tolist() == [False, True, False, True, False]


def test_round_trip_ranks_by_hand():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    # query 2 scores 0.6, 0.8, 0.96 against the passages: its own (2) is first; query 1's own is
    # passage 0 (score 0) behind passages 1 (1.0) and 2 (0.6): rank 3
    assert filtering.round_trip_ranks(q, p, np.array([0, 0, 2])).tolist() == [1, 3, 1]
    # a tie counts against the row's own passage
    assert filtering.round_trip_ranks(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1]))[0] == 2


@pytest.fixture(scope="module")
def minilm():
    from gemini_embed.embed import Embedder
    return Embedder.from_pretrained("all-minilm-l6-v2")


def test_round_trip_and_duplicates_with_a_real_embedder(minilm):
    cfg = filtering.FilterConfig(min_loglik=None, round_trip_k=1, dedup_cosine=0.9)
    kept, stats = filtering.filter_rows(ROWS, cfg, embedder=minilm)
    assert [r["query"] for r in kept] == ["Where is the Eiffel Tower?", "What do bees make?"]
    assert stats["dropped"] == {"duplicate": 1, "loglik": 0, "round_trip": 3}
    assert stats["kept_fraction"] == pytest.approx(2 / 6, abs=1e-4)
    assert kept[0]["provenance"]["filter"] == {"loglik_per_token": None, "round_trip_rank": 1}
    with pytest.raises(ValueError, match="needs an LLM scorer"):
        filtering.filter_rows(ROWS, filtering.FilterConfig(), embedder=minilm)


@pytest.mark.slow
def test_command_with_the_llm_scorer(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "kept.jsonl"
    p = subprocess.run([sys.executable, "-m", "gemini_embed.filter_pairs", "--input", str(src), "--output", str(out),
                        "--min_loglik", "-4", "--round_trip_k", "off", "--dedup_cosine", "off"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    stats = json.loads((tmp_path / "kept.stats.json").read_text())
    kept = {json.loads(ln)["query"]: json.loads(ln)["provenance"]["filter"]["loglik_per_token"]
            for ln in out.read_text().splitlines()}
    assert stats["rows"] == 6 and stats["kept"] == len(kept) and sum(stats["loglik_per_token"]["histogram"]) == 6
    assert stats["dropped"]["duplicate"] == 1  # the text duplicate, still dropped without embeddings
    assert (tmp_path / "kept.loglik.png").stat().st_size > 1000
    # a question about its passage is more likely under the LLM than the same kind of question about another
    assert "Where is the Eiffel Tower?" in kept
    p = subprocess.run([sys.executable, "-m", "gemini_embed.filter_pairs", "--input", str(tmp_path / "none.jsonl"),
                        "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "none.jsonl" in p.stderr
