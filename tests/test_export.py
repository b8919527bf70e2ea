"""The sentence-transformers export: `SentenceTransformer(DIR)` (offline, sentence-transformers and
transformers as installed) embeds like `Embedder.embed` on real texts, plain, with each query prompt
and at every MRL dim; the exported folder also loads back into gemini_embed with the same params.

Models: all-minilm-l6-v2 (a round trip of a sentence-transformers model), the registered tiny
Gemma 3 (vocab 262k, 2 layers, a 64 -> 32 projection, MRL 16/32: every export path at small cost)
and a trained tiny Gemma workdir. The 270M Gemma is checked by ../shared/checks/export_parity.py.
"""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from reference_libs import require

import gemini_embed as ge
import real_texts
from gemini_embed.export import export_sentence_transformers
from gemini_embed.pretrained import resolve

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXTS = real_texts.mixed(n_sts=120, n_docs=20, n_multi=40, n_code=20)


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _assert_same_embeddings(model, folder, tasks):
    st = require("sentence_transformers").SentenceTransformer(str(folder), device="cpu")
    ours = ge.Embedder.from_pretrained(model)
    assert len(TEXTS) >= 200
    for task in tasks:
        for dim in ours.mrl_dims:
            want = ours.embed(TEXTS, task=task, dim=dim)
            got = st.encode(TEXTS, prompt_name=task, truncate_dim=dim, normalize_embeddings=True, batch_size=32)
            assert got.shape == want.shape
            worst = _cosines(got, want).min()
            assert worst >= 0.9999, (task, dim, worst)


def test_minilm_round_trip(tmp_path):
    out = export_sentence_transformers("all-minilm-l6-v2", tmp_path / "st")
    _assert_same_embeddings("all-minilm-l6-v2", out, [None])
    modules = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]


def test_tiny_gemma_with_projection_prompts_and_mrl(tmp_path):
    out = export_sentence_transformers("gemma3-tiny", tmp_path / "st")
    _assert_same_embeddings("gemma3-tiny", out, [None, "search result", "sentence similarity"])
    modules = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense", "Normalize"]
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["search result"] == "task: search result | query: "
    assert prompts["document"] == "title: none | text: "
    # The encoder folder reads back into gemini_embed as the same weights (the window included).
    back, orig = resolve(str(out)), resolve("gemma3-tiny")
    assert back.config.encoder.sliding_window == orig.config.encoder.sliding_window
    for a, b in zip(jax.tree.leaves(back.params["params"]["encoder"]), jax.tree.leaves(orig.params["params"]["encoder"])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_trained_workdir_exports_from_the_command(tmp_path):
    work = tmp_path / "work"
    subprocess.run([sys.executable, "-m", "gemini_embed.main", "--config", str(ROOT / "experiments/tiny.py"), "--workdir",
                    str(work), "--config.train.steps=3", "--config.checkpoint.every=3"], check=True,
                   capture_output=True)
    r = subprocess.run([sys.executable, "-m", "gemini_embed.export", "--model", str(work), "--output",
                        str(tmp_path / "st")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_embeddings(str(work), tmp_path / "st", [None, "search result"])
    again = subprocess.run([sys.executable, "-m", "gemini_embed.export", "--model", str(work), "--output",
                            str(tmp_path / "st")], capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.strip().endswith("is not empty (pass --overwrite to replace it)")
