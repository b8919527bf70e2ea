"""Tokenizers and prompts: id parity with the HF / sentence-transformers references on real text."""
from __future__ import annotations

import csv
import json
import os
import pathlib

import pytest

from gemini_embed.tokenize import (
    QUERY_TASKS,
    BertTokenizer,
    Encoded,
    GemmaTokenizer,
    Tokenizer,
    apply_prompt,
    build_spm_model_proto,
    read_gguf_metadata,
)
from gemini_embed.weights.packaged import gemma3_270m_gguf, minilm_l6_v2_dir

DATA = pathlib.Path(os.environ["GEMINI_EMBED_DATA"])
WS = "\u2581"


# ------------------------------------------------------------------------------------------
# Test strings: real multilingual text, code, STS sentences and edge cases
# ------------------------------------------------------------------------------------------


def _sts_sentences(n: int) -> list[str]:
    out: list[str] = []
    with open(DATA / "sts/stsbenchmark/sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out += row[5:7]
            if len(out) >= n:
                break
    return out[:n]


def _code(n: int) -> list[str]:
    with open(DATA / "cosqa_dev/corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]


def _tatoeba(per_lang: int) -> list[str]:
    out = []
    for path in sorted((DATA / "tatoeba").glob("tatoeba.*-eng.*")):
        if not path.name.endswith(".eng"):  # the 112 non-English sides
            out += path.read_text(encoding="utf-8").splitlines()[:per_lang]
    return out


EDGE_CASES = [
    "",
    " ",
    "     ",
    "a  b   c    d",
    "  leading and trailing  ",
    "\ttab\t\tseparated\t",
    "line one\nline two\n\n\nline five\n",
    "\r\nwindows\r\nnewlines",
    "emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "naïve café Ünïcödé ﬁ ligature ＦＵＬＬＷＩＤＴＨ",
    "中文字符 日本語のテキスト 한국어 текст עברית العربية हिन्दी",
    "<table><tr><td>html</td></tr></table>",
    "\u2581literal sentencepiece space\u2581",
    "control \x00\x01\x7f chars",
    "1234567890 3.14159 1e-10",
    "def f(x):\n    return x  # comment\n\tpass",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    long_text = " ".join(_sts_sentences(80))  # ~1,000 tokens: crosses BERT's 256 limit
    texts = _tatoeba(2) + _code(40) + _sts_sentences(60) + EDGE_CASES
    texts += [long_text, "\n\n".join(_code(12)), "word " * 600, "x" * 5000]
    assert len(texts) >= 300
    return texts


# ------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------


def test_prompt_none_passthrough_and_titles() -> None:
    assert apply_prompt(["a", " b "], None) == ["a", " b "]
    assert apply_prompt(["text", "t2", "t3"], None, ["Title", None, ""]) == ["Title text", "t2", "t3"]


def test_prompt_document() -> None:
    assert apply_prompt(["body"], "document") == ["title: none | text: body"]
    assert apply_prompt(["b1", "b2", "b3"], "document", ["T", None, ""]) == [
        "title: T | text: b1",
        "title: none | text: b2",
        "title: none | text: b3",
    ]


@pytest.mark.parametrize("task", QUERY_TASKS)
def test_prompt_query(task: str) -> None:
    assert apply_prompt(["q?"], task) == [f"task: {task} | query: q?"]


def test_prompt_errors() -> None:
    with pytest.raises(ValueError, match="valid tasks: .*'document'.*'search result'"):
        apply_prompt(["x"], "retrieval")
    with pytest.raises(TypeError, match=r"texts\[3\] is int, expected str"):
        apply_prompt(["a", "b", "c", 4], None)
    with pytest.raises(TypeError, match=r"titles\[1\] is int"):
        apply_prompt(["a", "b"], "document", ["t", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single str"):
        apply_prompt("hello", None)
    with pytest.raises(ValueError, match="titles has 1 items"):
        apply_prompt(["a", "b"], "document", ["t"])
    with pytest.raises(ValueError, match="titles are only used"):
        apply_prompt(["a"], "search result", ["t"])
    assert apply_prompt([], "document") == []


# ------------------------------------------------------------------------------------------
# Gemma
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma() -> GemmaTokenizer:
    return GemmaTokenizer.from_gguf(gemma3_270m_gguf())


def test_gemma_attributes(gemma: GemmaTokenizer) -> None:
    assert isinstance(gemma, Tokenizer)
    assert (gemma.pad_id, gemma.eos_id, gemma.bos_id, gemma.unk_id) == (0, 1, 2, 3)
    assert gemma.vocab_size == 262_144


def test_gguf_whitespace_pieces_respelled() -> None:
    from sentencepiece import sentencepiece_model_pb2 as pb

    meta = read_gguf_metadata(gemma3_270m_gguf())
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    raw = [i for i, t in enumerate(tokens) if " " in t]  # type: ignore[union-attr]
    # The brief's premise: exactly 30 user-defined pieces of 2..31 raw spaces, ids 138..167.
    assert raw == list(range(138, 168))
    assert all(types[i] == 4 and set(tokens[i]) == {" "} for i in raw)  # type: ignore[index]
    proto = pb.ModelProto.FromString(build_spm_model_proto(meta))
    assert [proto.pieces[i].piece for i in raw] == [WS * n for n in range(2, 32)]
    assert not any(" " in p.piece for p in proto.pieces)
    assert proto.pieces[3].type == pb.ModelProto.SentencePiece.UNKNOWN


def test_gemma_golden_ids(gemma: GemmaTokenizer) -> None:
    # Checked against transformers' GGUF tokenizer (see the slow parity test); fast regression guard.
    ids = gemma.encode(["Hello world", "a    b", "  ", "<eos>"], 64).ids
    assert ids[0] == [2, 9259, 1902, 1]
    assert ids[1][1:-1].count(140) == 1  # 4 spaces: one whitespace-run piece "▁▁▁▁"
    assert ids[2] == [2, 138, 1]
    assert 1 not in ids[3][1:-1]  # control-token text is not parsed as a control token


def test_gemma_truncation(gemma: GemmaTokenizer, corpus: list[str]) -> None:
    full = gemma.encode(corpus, 100_000)
    assert not any(full.truncated)
    for max_length in (2, 3, 16, 128):
        enc = gemma.encode(corpus, max_length)
        assert isinstance(enc, Encoded) and len(enc.ids) == len(corpus)
        for ids, cut, ref in zip(enc.ids, enc.truncated, full.ids):
            assert len(ids) <= max_length and ids[0] == 2 and ids[-1] == 1
            assert cut == (len(ref) > max_length)
            assert ids[:-1] == ref[: len(ids) - 1]  # a prefix of the full text, EOS kept at the end
    assert gemma.encode(["", "x" * 1000], 2) == Encoded([[2, 1], [2, 1]], [False, True])


def test_gemma_input_errors(gemma: GemmaTokenizer) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        gemma.encode(["a", None], 8)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single str"):
        gemma.encode("abc", 8)
    with pytest.raises(ValueError, match="max_length"):
        gemma.encode(["a"], 1)
    assert gemma.encode([], 8) == Encoded([], [])


def test_gemma_cache(tmp_path: pathlib.Path, gemma: GemmaTokenizer, corpus: list[str]) -> None:
    first = GemmaTokenizer.from_gguf(gemma3_270m_gguf(), cache_dir=tmp_path)
    (cached,) = tmp_path.iterdir()
    assert cached.suffix == ".model" and not list(tmp_path.glob("*.tmp"))
    stamp = cached.stat().st_mtime_ns
    second = GemmaTokenizer.from_gguf(gemma3_270m_gguf(), cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp  # reused, not rebuilt
    from_file = GemmaTokenizer.from_file(cached)
    expected = gemma.encode(corpus, 512)
    for tok in (first, second, from_file):
        assert tok.encode(corpus, 512) == expected


@pytest.mark.slow
def test_gemma_matches_transformers(gemma: GemmaTokenizer, corpus: list[str]) -> None:
    """Same ids as transformers' tokenizer built from the same GGUF (its load takes ~45 s)."""
    from transformers import AutoTokenizer

    path = gemma3_270m_gguf()
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = gemma.encode(corpus, 1_000_000)
    assert not any(ours.truncated)
    hf_body = hf(corpus, add_special_tokens=False)["input_ids"]
    hf_bos = hf(corpus)["input_ids"]  # HF adds BOS only
    mismatches = [t for t, o, h in zip(corpus, ours.ids, hf_body) if o != [2, *h, 1]]
    assert not mismatches, f"{len(mismatches)}/{len(corpus)} differ, e.g. {mismatches[:3]!r}"
    assert all(h == [2, *b] for h, b in zip(hf_bos, hf_body))
    # Known, deliberate difference: HF parses control-token text ("<eos>") into the control id.
    assert hf("<eos>", add_special_tokens=False)["input_ids"] == [1]
    assert gemma.encode(["<eos>"], 64).ids[0][1:-1] != [1]


# ------------------------------------------------------------------------------------------
# BERT (all-MiniLM-L6-v2)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert() -> BertTokenizer:
    return BertTokenizer.from_dir(minilm_l6_v2_dir())


def test_bert_attributes(bert: BertTokenizer) -> None:
    assert isinstance(bert, Tokenizer)
    assert (bert.pad_id, bert.bos_id, bert.eos_id, bert.vocab_size) == (0, 101, 102, 30_522)
    assert bert.encode(["Hello world!"], 256).ids == [[101, 7592, 2088, 999, 102]]


def test_bert_truncation_and_errors(bert: BertTokenizer, corpus: list[str]) -> None:
    full = bert.encode(corpus, 100_000)
    enc = bert.encode(corpus, 256)
    assert sum(enc.truncated) >= 3
    for ids, cut, ref in zip(enc.ids, enc.truncated, full.ids):
        assert len(ids) <= 256 and ids[0] == 101 and ids[-1] == 102
        assert cut == (len(ref) > 256) and ids[:-1] == ref[: len(ids) - 1]
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        bert.encode([b"x"], 8)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_length"):
        bert.encode(["x"], 0)


@pytest.mark.slow
def test_bert_matches_sentence_transformers(bert: BertTokenizer, corpus: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_l6_v2_dir()), device="cpu")
    assert model.max_seq_length == 256
    ours = bert.encode(corpus, model.max_seq_length)
    assert sum(ours.truncated) >= 3  # the parity check covers truncated texts
    for start in range(0, len(corpus), 64):
        batch = corpus[start : start + 64]
        features = model.preprocess(batch)
        for i, (ids, mask) in enumerate(zip(features["input_ids"], features["attention_mask"])):
            assert ours.ids[start + i] == ids[mask.bool()].tolist(), repr(batch[i][:80])
