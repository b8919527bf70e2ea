"""Decoding with a KV cache (llm/decoding.py) against Hugging Face transformers' `generate`.

Real weights: the packaged Gemma 3 270M GGUF, which transformers also loads; greedy decoding must
pick the same tokens. The fast checks use a tiny random Gemma 3 with a sliding window of 8, so
the cache's local-attention mask is exercised beyond the window.
"""
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemini_embed.llm.decoding import Generator, _pick
from gemini_embed.model.gemma3 import Gemma3
from gemini_embed.weights.gemma3_import import load_gemma3_hf
from gemini_embed.weights.packaged import gemma3_270m_gguf

import real_texts  # noqa: E402  (tests/ is put on sys.path by conftest)
from reference_libs import Lazy  # noqa: E402

torch, transformers = Lazy("torch"), Lazy("transformers")

# The tiny model has no tokenizer: ids go in and come out. Token 1 is its end of sequence.
TINY_TOKENS = types.SimpleNamespace(pad_id=0, bos_id=2, eos_id=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = transformers.Gemma3TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
        max_position_embeddings=256, eos_token_id=1, bos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    hf = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm weights and a wide spread of logits: no near-ties
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("tiny_gemma3")
    hf.save_pretrained(folder)
    config, params = load_gemma3_hf(folder, attention="causal")
    return hf, config, params


def _hf_greedy(hf, prompt, n):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, top_k=None, top_p=None)
    new = out[0, len(prompt):].tolist()
    return new[:new.index(1)] if 1 in new else new


def test_tiny_greedy_equals_transformers_beyond_the_window(tiny):
    hf, config, params = tiny
    gen = Generator(model=(config, params, TINY_TOKENS), batch_size=4, max_prompt_tokens=64)
    rng = np.random.default_rng(0)
    prompts = [[2, *rng.integers(3, 512, n).tolist()] for n in (3, 11, 30, 7, 19, 1)]  # 2 batches, left-padded
    got = gen.generate_ids(prompts, max_new_tokens=24)
    for p, g in zip(prompts, got):
        assert g == _hf_greedy(hf, p, 24), len(p)
    assert sum(len(g) for g in got) > 100  # most rows ran all 24 steps


def test_tiny_prefill_logits_equal_the_plain_forward(tiny):
    """A left-padded row's last-token logits are its unpadded forward's (positions skip the padding)."""
    _, config, params = tiny
    gen = Generator(model=(config, params, TINY_TOKENS), batch_size=2, max_prompt_tokens=32)
    model = Gemma3(config)
    prompts = [[2, 5, 9, 44, 7, 300, 12, 8, 99, 100, 3], [2, 17, 18]]
    tokens = np.zeros((2, 16), np.int32)
    mask = np.zeros((2, 16), bool)
    for r, p in enumerate(prompts):
        tokens[r, 16 - len(p):], mask[r, 16 - len(p):] = p, True
    from gemini_embed.llm.decoding import init_cache
    logits, *_ = gen._prefill(gen.params, init_cache(config, 2, 32), tokens, mask)
    for r, p in enumerate(prompts):
        ids = jnp.array([p])
        want = model.apply(params, model.apply(params, ids, jnp.ones(ids.shape, bool))[:, -1:], method=Gemma3.logits)
        np.testing.assert_allclose(np.asarray(logits[r]), np.asarray(want[0, 0]), rtol=1e-5, atol=1e-5)


def test_sampling_seeds_and_compilations(tiny):
    _, config, params = tiny
    gen = Generator(model=(config, params, TINY_TOKENS), batch_size=2, max_prompt_tokens=64)
    prompts = [[2, 40, 41], [2, 50, 51, 52, 53], [2, *range(60, 100)]]
    a = gen.generate_ids(prompts, 12, temperature=1.0, top_p=0.9, seed=3)
    assert a == gen.generate_ids(prompts, 12, temperature=1.0, top_p=0.9, seed=3)
    assert a != gen.generate_ids(prompts, 12, temperature=1.0, top_p=0.9, seed=4)
    # a row's sample depends on its own seed, not on its batch: alone, with seed 3 + 2
    assert gen.generate_ids(prompts[2:], 12, temperature=1.0, top_p=0.9, seed=[5]) == a[2:]
    # top_p so small that only the top token is left: greedy again
    assert gen.generate_ids(prompts, 12, temperature=1.0, top_p=1e-6, seed=5) == gen.generate_ids(prompts, 12)
    # prompt lengths 3..40 fall in few buckets; a step is one compiled program per (cache length, mode)
    for n in range(2, 41, 3):
        gen.generate_ids([[2, *range(3, 3 + n)]], 8)
    assert len(gen.shapes_seen) <= 4, gen.shapes_seen
    assert gen._step._cache_size() <= 2 * len({s for _, s in gen.shapes_seen}), gen._step._cache_size()


def test_pick_samples_the_top_p_mass_at_temperature():
    """Frequencies of 40,000 draws against the distribution computed in NumPy."""
    logits = np.array([2.0, 1.5, 1.0, 0.0, -1.0, -3.0], np.float32)
    temperature, top_p = 0.7, 0.9  # probabilities 0.555, 0.272, 0.133, ...: the top 3 reach 0.9
    p = np.exp(logits / temperature - np.max(logits / temperature))
    p /= p.sum()
    keep = (np.cumsum(p) - p) < top_p  # the smallest prefix of ranked tokens whose mass reaches top_p
    want = np.where(keep, p, 0) / p[keep].sum()
    keys = jax.random.split(jax.random.PRNGKey(0), 40_000)
    draws = _pick(jnp.tile(jnp.array(logits), (len(keys), 1)), keys, temperature, top_p, False)
    freq = np.bincount(np.asarray(draws), minlength=len(logits)) / len(keys)
    assert keep.sum() == 3 and np.all(freq[~keep] == 0)
    np.testing.assert_allclose(freq, want, atol=0.01)


def test_top_candidates_and_the_full_sort_draw_the_same_tokens(monkeypatch):
    """Top-p looks at the top NUCLEUS_CANDIDATES tokens when they hold the mass, else sorts the
    whole vocabulary: either way the same tokens for the same keys."""
    from gemini_embed.llm import decoding

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(64, 300)) * 2 + np.where(np.arange(300) < 5, 10.0, 0.0), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    p = np.exp(np.asarray(logits) - np.max(np.asarray(logits), axis=1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.all(np.sort(p, axis=1)[:, ::-1][:, :16].sum(1) >= 0.9)  # 16 candidates hold the top-p mass
    draws = []
    for k in (300, 16, 2):  # the whole ranking; the top 16; too few (the full sort)
        monkeypatch.setattr(decoding, "NUCLEUS_CANDIDATES", k)
        draws.append(np.asarray(_pick(logits, keys, 1.0, 0.9, False)))
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], draws[2])
    assert len(set(draws[0].tolist())) >= 3  # it samples, not argmax


def test_bad_arguments_are_one_line_errors(tiny):
    _, config, params = tiny
    gen = Generator(model=(config, params, TINY_TOKENS), batch_size=2, max_prompt_tokens=16)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        gen.generate_ids([[2, 3]], 0)
    with pytest.raises(ValueError, match="top_p in"):
        gen.generate_ids([[2, 3]], 4, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="more than max_prompt_tokens=16"):
        gen.generate_ids([[2, *range(3, 30)]], 4)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        gen.generate_ids([[2, 3], []], 4)


# ------------------------------------------------------------------ Gemma 3 270M (slow)

def _prompts_270m():
    docs = [d[:400] for d in real_texts.scifact_docs(6)]
    return ([f"Passage: {d}\nQuestion:" for d in docs] + real_texts.sts_sentences(8)
            + real_texts.code(3) + real_texts.multilingual(3))


@pytest.mark.slow
def test_270m_greedy_equals_transformers_generate():
    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    prompts = [tok(p)["input_ids"] for p in _prompts_270m()]
    assert len(prompts) == 20 and all(p[0] == tok.bos_token_id for p in prompts)
    gen = Generator(batch_size=8, max_prompt_tokens=256)
    got = gen.generate_ids(prompts, max_new_tokens=32)
    for p, g in zip(prompts, got):
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), max_new_tokens=32, do_sample=False, top_k=None, top_p=None,
                              eos_token_id=gen.tokenizer.eos_id)[0, len(p):].tolist()
        want = out[:out.index(gen.tokenizer.eos_id)] if gen.tokenizer.eos_id in out else out
        assert g == want, (tok.decode(p[-20:]), tok.decode(g), tok.decode(want))
    assert sum(len(g) for g in got) >= 20 * 24, [len(g) for g in got]
    del hf
    # stop sequences cut the text where they first appear
    texts = gen.generate(_prompts_270m()[:6], 32)
    cut = gen.generate(_prompts_270m()[:6], 32, stop=["\n", "?"])
    for full, short in zip(texts, cut):
        assert "\n" not in short and "?" not in short and full.startswith(short)
    assert any(len(s) < len(f) for s, f in zip(cut, texts))
