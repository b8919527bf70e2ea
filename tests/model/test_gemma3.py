"""Gemma 3 port vs Hugging Face transformers on the same weights (reference implementation).

Real weights: the packaged Gemma 3 270M GGUF, which transformers also loads. Small checks use a
tiny random Gemma 3 saved by transformers as safetensors (exercises the HF-folder importer).
"""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemini_embed.model.embedding_model import mean_pool
from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3, stack_layers
from gemini_embed.weights.gemma3_import import load_gemma3_gguf, load_gemma3_hf
from gemini_embed.weights.packaged import gemma3_270m_gguf
from gemini_embed.weights.validate import WeightImportError

import real_texts  # noqa: E402  (tests/ is put on sys.path by conftest)
from reference_libs import Lazy  # noqa: E402

torch, transformers = Lazy("torch"), Lazy("transformers")  # only the parity tests import them


def _hf_bidirectional(model_causal):
    """A bidirectional copy of an HF Gemma 3 (config built with the flag, as EmbeddingGemma's)."""
    cfg = model_causal.config.to_dict()
    cfg["use_bidirectional_attention"] = True
    cfg = type(model_causal.config)(**cfg)  # built with the flag: stores window // 2 + 1
    m = type(model_causal)(cfg).eval()
    m.load_state_dict(model_causal.state_dict())
    return m


@pytest.fixture(scope="module")
def hf_270m():
    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    causal = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return tok, causal


@pytest.fixture(scope="module")
def ours_270m():
    return load_gemma3_gguf(gemma3_270m_gguf())


def _ids(tok, text, limit=2048):
    return tok(text)["input_ids"][: limit - 1] + [tok.eos_token_id]  # BOS + text + EOS


@pytest.mark.slow
def test_270m_causal_logits_match_transformers(hf_270m, ours_270m):
    tok, hf = hf_270m
    cfg, params = ours_270m
    model = Gemma3(dataclasses.replace(cfg, attention="causal"))
    docs = real_texts.scifact_docs(8)
    prompts = ["The capital of France is", real_texts.sts_sentences(1)[0], real_texts.multilingual(1)[0],
               real_texts.code(1)[0], " ".join(docs)]
    # Logits at every 16th position and the last: each depends on its whole causal prefix, and the
    # [L, 262144] float32 logits of all 2,048 positions would hold 2 GiB per side.
    fwd = jax.jit(lambda p, t, m, pos: model.apply(p, model.apply(p, t, m)[:, pos], method=Gemma3.logits))
    lengths = []
    for text in prompts:
        ids = tok(text)["input_ids"][:2048]
        lengths.append(len(ids))
        pos = np.unique(np.r_[0:len(ids):16, len(ids) - 1])
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor([ids]), logits_to_keep=torch.tensor(pos)).logits[0].numpy()
        got = np.asarray(fwd(params, jnp.array([ids]), jnp.ones((1, len(ids)), bool), jnp.array(pos)))[0]
        assert got.shape == ref.shape == (len(pos), cfg.vocab_size)
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        print(f"causal logits: {len(ids)} tokens, relative error {rel:.2e}")
        assert rel <= 1e-4, (len(ids), rel)
    assert max(lengths) > 1000, lengths


@pytest.mark.slow
def test_270m_bidirectional_mean_pool_matches_transformers(hf_270m, ours_270m):
    tok, hf_causal = hf_270m
    hf = _hf_bidirectional(hf_causal)
    assert hf.config.sliding_window == 257  # |i - j| <= 256
    cfg, params = ours_270m
    model = Gemma3(dataclasses.replace(cfg, attention="bidirectional"))
    fwd = jax.jit(lambda p, t, m: mean_pool(model.apply(p, t, m), m))
    texts = real_texts.mixed()
    assert len(texts) >= 50
    cos, lengths = [], []
    for text in texts:
        ids = _ids(tok, text)
        lengths.append(len(ids))
        with torch.no_grad():
            ref = hf.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy().mean(0)
        got = np.asarray(fwd(params, jnp.array([ids]), jnp.ones((1, len(ids)), bool)))[0]
        cos.append(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref))
    print(f"bidirectional: {len(cos)} texts, worst cosine {min(cos):.7f}, longest {max(lengths)} tokens")
    assert max(lengths) > 1000
    assert min(cos) >= 0.9999, (min(cos), int(np.argmin(cos)))


@pytest.mark.slow
def test_270m_padding_does_not_change_pooled_output(ours_270m):
    # In float64, so that only masking (not float32 summation order, ~1e-5 here) could differ.
    cfg, params = ours_270m
    with jax.enable_x64(True):
        model = Gemma3(dataclasses.replace(cfg, dtype="float64"))
        params64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        fwd = jax.jit(lambda p, t, m: mean_pool(model.apply(p, t, m), m))
        ids = [2, 818, 5279, 529, 7001, 563, 1]
        alone = np.asarray(fwd(params64, jnp.array([ids]), jnp.ones((1, len(ids)), bool)))
        padded = np.zeros((2, 32), np.int32)
        padded[0, :len(ids)] = ids
        padded[1, :3] = [2, 9259, 1]
        batch = np.asarray(fwd(params64, jnp.array(padded), jnp.array(padded != 0)))
    assert alone.dtype == np.float64
    np.testing.assert_allclose(batch[0], alone[0], rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ tiny random model (fast)

@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    cfg = transformers.Gemma3TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=16, max_position_embeddings=256)
    torch.manual_seed(0)
    m = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm weights, so the 1 + w convention is actually exercised
        for name, p in m.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("tiny_gemma3")
    m.save_pretrained(folder)
    return m, folder


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_tiny_hf_folder_matches_transformers(tiny_hf, attention, scan_layers):
    """Both layouts: unrolled layer_<i> blocks, and the layer scan over stacked params (which
    picks local/global masks and RoPE bases per layer from a traced flag)."""
    hf, folder = tiny_hf
    if attention == "bidirectional":
        hf = _hf_bidirectional(hf)
    cfg, params = load_gemma3_hf(folder, attention=attention, scan_layers=scan_layers)
    assert ("layers" in params["params"]) == scan_layers
    model = Gemma3(cfg)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 512, size=(2, 40))
    with torch.no_grad():
        ref = hf.model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    got = np.asarray(model.apply(params, jnp.array(ids), jnp.ones(ids.shape, bool)))
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_import_errors_name_the_tensor(tiny_hf, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, folder = tiny_hf
    tensors = load_file(str(folder / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    bad = dict(tensors)
    bad["model.layers.2.mlp.up_proj.weight"] = bad["model.layers.2.mlp.up_proj.weight"][:, :10]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightImportError, match=r"model\.layers\.2\.mlp\.up_proj\.weight.*\(128, 10\).*\(128, 64\)"):
        load_gemma3_hf(tmp_path)
    del bad["model.layers.2.mlp.up_proj.weight"]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightImportError, match=r"missing tensor 'model\.layers\.2\.mlp\.up_proj\.weight'"):
        load_gemma3_hf(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightImportError, match="model.safetensors"):
        load_gemma3_hf(tmp_path)


def test_truncated_gguf_is_a_clear_error(tmp_path):
    src = gemma3_270m_gguf()
    bad = tmp_path / "truncated.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(5_000_000))
    with pytest.raises(WeightImportError, match="truncated.gguf"):
        load_gemma3_gguf(bad)


def test_scanned_layers_gradients_match_unrolled(tiny_hf):
    """Gradients through the layer scan (with remat, as the pod configs run) equal the unrolled
    model's, leaf by leaf after stacking. In float64: the two differ only by summation order
    (float32: up to 5e-5 on gradients of size 59)."""
    _, folder = tiny_hf
    with jax.enable_x64(True):
        cfg, params = load_gemma3_hf(folder, remat=True, dtype="float64")
        scfg, sparams = load_gemma3_hf(folder, remat=True, dtype="float64", scan_layers=True)
        params, sparams = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (params, sparams))
        ids = jnp.array(np.random.default_rng(1).integers(1, 512, size=(2, 24)))
        mask = jnp.arange(24)[None, :] < jnp.array([[24], [17]])

        def loss(model):
            return lambda p: jnp.sum(jnp.tanh(mean_pool(model.apply(p, ids, mask), mask)))

        v, g = jax.value_and_grad(loss(Gemma3(cfg)))(params)
        sv, sg = jax.value_and_grad(loss(Gemma3(scfg)))(sparams)
    np.testing.assert_allclose(sv, v, rtol=1e-12)
    stacked = stack_layers(g["params"], cfg.num_layers)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), stacked, dict(sg["params"]))


# Published parameter counts of the Gemma 3 text models (embeddings included).
PUBLISHED = {"gemma3-270m": 268e6, "gemma3-1b": 1.0e9, "gemma3-4b": 3.88e9, "gemma3-12b": 11.77e9,
             "gemma3-27b": 27.0e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_by_shape_only(name):
    cfg = GEMMA3_PRESETS[name]
    abstract = jax.eval_shape(Gemma3(cfg).init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32),
                              jnp.ones((1, 16), bool))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(abstract)))
    assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.03, (name, n)
    # Every param carries logical axis names for sharding.
    boxed = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert all(isinstance(x, nn.LogicallyPartitioned) for x in boxed)
