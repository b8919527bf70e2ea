"""The on-disk embedding cache: a second run embeds nothing and scores the same; a changed model misses."""
import types

import numpy as np
import pytest

from gemini_embed.eval import evaluate
from gemini_embed.eval.cache import EmbeddingCache, cache_root, model_fingerprint

from test_eval_evaluators import BagOfWords  # noqa: E402  (tests/eval is on sys.path under pytest)

TASKS = ["STS17:en-en", "CoSQA", "Tatoeba:ast-eng"]


def scores(results):
    return {k: (r["main_score"], r["scores"]) for k, r in results.items()}


def test_second_run_reads_the_cache(tmp_path):
    enc = BagOfWords()
    cache = EmbeddingCache("bow-a", 1024, tmp_path)
    first = evaluate(enc, TASKS, cache=cache, progress=False)
    n_calls = len(enc.calls)  # STS: both sides in one call; CoSQA: queries, corpus; Tatoeba: two sides
    assert n_calls == 5 and (cache.hits, cache.misses) == (0, 5)

    again = EmbeddingCache("bow-a", 1024, tmp_path)
    second = evaluate(enc, TASKS, cache=again, progress=False)
    assert len(enc.calls) == n_calls and (again.hits, again.misses) == (5, 0)  # nothing embedded
    assert scores(second) == scores(first)
    files = sorted(p.name for p in (tmp_path / "bow-a").rglob("*") if p.is_file())
    assert len(files) == 5 and all(f.endswith(".npy") and not f.startswith(".") for f in files)  # no temp files
    loaded = np.load(next((tmp_path / "bow-a").rglob("*.npy")), mmap_mode="r")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float32

    other = EmbeddingCache("bow-b", 1024, tmp_path)  # another model: nothing shared
    evaluate(enc, ["STS17:en-en"], cache=other, progress=False)
    assert len(enc.calls) == n_calls + 1 and other.misses == 1


def test_cache_with_several_dims_matches_no_cache(tmp_path):
    cached = evaluate(BagOfWords(), ["STS17:en-en"], dims=[64, 1024], cache=EmbeddingCache("m", 1024, tmp_path),
                      progress=False)
    plain = evaluate(BagOfWords(), ["STS17:en-en"], dims=[64, 1024], progress=False)
    assert scores(cached) == scores(plain)


def test_changed_texts_prompt_or_titles_miss(tmp_path):
    cache = EmbeddingCache("m", 1024, tmp_path)
    enc = cache.wrap(BagOfWords(), "T")
    enc(["a b", "c"], task="search result")
    enc(["a b", "c"], task="search result")
    enc(["a b", "d"], task="search result")
    enc(["a b", "c"], task="classification")
    enc(["a b", "c"], task="document", titles=["x", None])
    enc(["a b", "c"], task="document", titles=["y", None])
    assert (cache.hits, cache.misses) == (1, 5)


def test_a_truncated_cache_file_is_embedded_again(tmp_path, caplog):
    enc = BagOfWords()
    texts = ["a man sings", "a cat sleeps", "rain falls"]
    dim = enc(texts[:1]).shape[1]
    cache = EmbeddingCache("m", dim, tmp_path)
    want = np.array(cache.wrap(enc, "T")(texts))
    path = cache.path("T", texts)
    path.write_bytes(path.read_bytes()[:-20])  # cut short, as by a full disk
    got = EmbeddingCache("m", dim, tmp_path).wrap(enc, "T")(texts)
    np.testing.assert_array_equal(got, want)
    assert f"embedding cache file {path} is unreadable" in caplog.text


def test_failed_encode_leaves_no_file(tmp_path):
    def bad(texts, task=None, titles=None):
        return np.zeros((len(texts), 3), np.float32)  # wrong dim for this cache

    cache = EmbeddingCache("m", 8, tmp_path)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        cache.wrap(bad, "T")(["a", "b"])
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_cache_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMINI_EMBED_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GEMINI_EMBED_CACHE")
    assert cache_root().parts[-3:] == (".cache", "gemini_embed", "embeddings")


def test_fingerprint_changes_with_params_and_config():
    def fake(params, max_length=128):
        return types.SimpleNamespace(name="my/model", config=("cfg",), max_length=max_length, uses_prompts=True,
                                     tokenizer=object(), params=params)

    params = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}}
    base = model_fingerprint(fake(params))
    assert base.startswith("my_model-") and base == model_fingerprint(fake(params))
    retrained = {"params": {"w": params["params"]["w"] + 1e-6, "b": params["params"]["b"]}}
    assert model_fingerprint(fake(retrained)) != base
    assert model_fingerprint(fake(params, max_length=256)) != base
