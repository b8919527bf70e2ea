"""The Embedder API: parity with sentence-transformers, ordering, bucketing, sharding, bad input."""
import warnings

import jax
import numpy as np
import pytest
from reference_libs import require

import gemini_embed as ge
import real_texts
from gemini_embed import sharding
from gemini_embed.embed import length_buckets
from gemini_embed.normalize import mrl_truncate


@pytest.fixture(scope="module")
def minilm():
    return ge.Embedder.from_pretrained("all-minilm-l6-v2")


def one_device():
    """A 1-device mesh: the Gemma params (1 GiB) replicated on 8 simulated CPU devices would be
    8 host copies (the suite's memory peak was two such Embedders, 20 GB)."""
    return sharding.make_mesh(data=1, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def gemma():
    return ge.Embedder.from_pretrained("gemma3-270m", mesh=one_device())


def test_minilm_matches_sentence_transformers(minilm):
    st = require("sentence_transformers")
    texts = real_texts.sts_sentences(150) + real_texts.scifact_docs(10) + real_texts.multilingual(10)
    ref = st.SentenceTransformer(str(ge.weights.packaged.minilm_l6_v2_dir()), device="cpu").encode(
        texts, normalize_embeddings=True, batch_size=32)
    got = minilm.embed(texts, batch_size=32)
    assert got.shape == ref.shape == (len(texts), 384) and got.dtype == np.float32
    cos = np.sum(got * ref, axis=1)
    assert cos.min() >= 0.99999, (cos.min(), int(np.argmin(cos)))


def test_order_is_restored_and_batching_does_not_matter(minilm):
    texts = real_texts.sts_sentences(40) + real_texts.scifact_docs(5)
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    together = minilm.embed(texts, batch_size=16)
    alone = np.concatenate([minilm.embed([t]) for t in texts[:8]])
    np.testing.assert_allclose(together[:8], alone, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)


def test_compilations_stay_bounded(minilm):
    rng = np.random.default_rng(1)
    words = " ".join(real_texts.scifact_docs(3)).split()
    texts = [" ".join(words[: int(n)]) for n in rng.integers(1, 300, size=300)]
    before = minilm.num_compilations
    minilm.embed(texts, batch_size=32)
    minilm.embed(texts[::-1], batch_size=32)  # same shapes again: no new compilation
    assert minilm.num_compilations - before <= len(length_buckets(minilm.max_length))
    assert minilm._fn._cache_size() == minilm.num_compilations  # jit's own count agrees


def test_sharded_over_8_devices_equals_one_device(minilm):
    assert len(jax.local_devices()) == 8 and minilm.mesh.size == 8
    one = ge.embed.Embedder(minilm.config, jax.device_get(minilm.params), minilm.tokenizer,
                            max_length=minilm.max_length, uses_prompts=False,
                            mesh=sharding.make_mesh(devices=jax.local_devices()[:1]))
    texts = real_texts.sts_sentences(24)
    np.testing.assert_allclose(minilm.embed(texts), one.embed(texts), atol=1e-6)


def test_bad_input(minilm):
    assert minilm.embed([]).shape == (0, 384)
    assert minilm.embed([], dim=128).shape == (0, 128)
    e = minilm.embed(["", "   ", "\n\t"])
    assert np.isfinite(e).all() and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        minilm.embed(["a", "b", 3])
    with pytest.raises(TypeError, match="one string"):
        minilm.embed("a single string")
    with pytest.raises(ValueError, match="384"):
        minilm.embed(["a"], dim=385)
    with pytest.raises(ValueError):
        minilm.embed(["a"], dim=0)
    with pytest.raises(TypeError, match=r"dim must be an int, got 16.0 \(float\)"):
        minilm.embed(["a"], dim=16.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        minilm.embed(["a"], batch_size=0)
    with pytest.raises(ValueError, match="unknown task 'no such task'"):  # ignored by a prompt-free model, still checked
        minilm.embed(["a"], task="no such task")
    with pytest.raises(ValueError, match="attention must be 'bidirectional'.*got 'sideways'"):
        ge.Embedder.from_pretrained("gemma3-tiny", attention="sideways")
    with pytest.raises(ValueError, match="gemma3-270m.*all-minilm-l6-v2|all-minilm-l6-v2.*gemma3-270m"):
        ge.Embedder.from_pretrained("no-such-model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = minilm.embed(["word " * 20_000, "short"])
    assert out.shape == (2, 384)
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1


@pytest.mark.slow
def test_gemma_prompts_dims_and_projection(gemma):
    assert gemma.dim == 768 and gemma.config.mrl_dims == (128, 256, 512, 768)
    texts = ["What causes tides?", "The moon's gravity pulls on the oceans."]
    q = gemma.embed(texts[:1], task="search result")
    literal = gemma.embed(["task: search result | query: What causes tides?"])
    np.testing.assert_allclose(q, literal, atol=1e-6)
    d = gemma.embed(texts[1:], task="document", titles=["Tides"])
    np.testing.assert_allclose(d, gemma.embed(["title: Tides | text: " + texts[1]]), atol=1e-6)
    full = gemma.embed(texts)
    np.testing.assert_allclose(gemma.embed(texts, dim=128), mrl_truncate(full, 128), atol=1e-6)
    with pytest.raises(ValueError, match="unknown|valid|task"):
        gemma.embed(texts, task="no such task")
    raw = ge.Embedder.from_pretrained("gemma3-270m", projection=None, max_length=64, mesh=one_device())
    assert raw.dim == 640 and raw.max_length == 64
    assert raw.embed(texts).shape == (2, 640)
