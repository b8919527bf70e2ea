"""Quantised embeddings, Hamming search, similarity and semantic_search against independent references:
sentence-transformers' quantize_embeddings (the same five precisions), NumPy bit counts and sorts."""
import numpy as np
import pytest
import scipy.stats
from reference_libs import require

import gemini_embed as ge
import real_texts
from gemini_embed import quantize
from gemini_embed.eval import runner, tasks
from gemini_embed.eval.search import binary_search, semantic_search
from gemini_embed.normalize import mrl_truncate

PRECISIONS = ("int8", "uint8", "binary", "ubinary")


@pytest.fixture(scope="module")
def minilm():
    return ge.Embedder.from_pretrained("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def embedded(minilm):
    """Calibration: 300 SciFact abstracts; evaluation: 200 STSB test sentences (other texts)."""
    return minilm.embed(real_texts.scifact_docs(300)), minilm.embed(real_texts.sts_sentences(200))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_levels_and_bits_equal_sentence_transformers(embedded, precision):
    st = require("sentence_transformers")
    calibration, emb = embedded
    for dim in (384, 100):  # 100: a D that is not a multiple of 8 (padded bits)
        cal, x = mrl_truncate(calibration, dim), mrl_truncate(emb, dim)
        ranges = quantize.calibration_ranges(cal)
        ours = quantize.quantize(x, precision, ranges)
        ref = st.quantize_embeddings(x, precision, calibration_embeddings=cal)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        assert ours.nbytes == len(x) * quantize.bytes_per_vector(precision, dim)
        if precision in ("int8", "uint8"):  # MiniLM's dead dimensions (ranges ~1e-33): ours constant, theirs noise
            flat = ranges[1] - ranges[0] < quantize.CONSTANT_RANGE
            assert flat.sum() <= 3 and np.all(ours[:, flat] == (0 if precision == "uint8" else -128))
            ours, ref = ours[:, ~flat], ref[:, ~flat]
        np.testing.assert_array_equal(ours, ref)


def test_binary_cosine_is_hamming(embedded):
    _, emb = embedded
    bits = quantize.quantize(emb, "ubinary")
    signs = quantize.as_float(bits, "ubinary", 384)
    hamming = np.bitwise_count(bits[:, None, :] ^ bits[None, :, :]).sum(-1, dtype=np.int64)  # [N, N]
    np.testing.assert_array_equal(signs @ signs.T, 384 - 2 * hamming)  # integers: exact in float32
    np.testing.assert_array_equal(quantize.as_float(quantize.quantize(emb, "binary"), "binary", 384), signs)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_hamming_search_and_rescoring_equal_brute_force(embedded, precision):
    corpus_f, queries_f = embedded[0], embedded[1][:40]
    corpus, queries = quantize.quantize(corpus_f, precision), quantize.quantize(queries_f, precision)
    u = lambda b: b.astype(np.int16).astype(np.uint8) if precision == "ubinary" else (b.astype(np.int16) + 128).astype(np.uint8)  # noqa: E731
    hamming = np.bitwise_count(u(queries)[:, None, :] ^ u(corpus)[None, :, :]).sum(-1, dtype=np.int64)  # [Q, N]
    scores, idx = binary_search(queries, corpus, 10, dim=384, precision=precision)
    ref = np.lexsort((np.broadcast_to(np.arange(300), hamming.shape), hamming), axis=-1)[:, :10]  # ties: lower index
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, 1 - 2 * np.take_along_axis(hamming, ref, -1) / 384, atol=1e-6)

    scores, idx = binary_search(queries, corpus, 5, dim=384, precision=precision, rescore_queries=queries_f,
                                rescore_multiplier=4)
    signs = quantize.as_float(corpus, precision, 384)
    for q in range(len(queries)):
        cand = np.lexsort((np.arange(300), hamming[q]))[:20]  # the 5 x 4 best by Hamming
        dots = signs[cand] @ queries_f[q]
        best = cand[np.lexsort((cand, -dots))[:5]]
        np.testing.assert_array_equal(idx[q], best)
        np.testing.assert_allclose(scores[q], signs[best] @ queries_f[q], rtol=1e-5)


def test_semantic_search_and_similarity(embedded):
    corpus, queries = embedded[0], embedded[1][:30]
    sim = ge.Embedder.similarity(queries, corpus * 3.0)  # any scale: cosine
    ref = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)).T
    np.testing.assert_allclose(sim, ref, atol=1e-6)
    hits = ge.semantic_search(queries, corpus, k=3)
    for q, row in enumerate(hits):
        assert [h["corpus_id"] for h in row] == list(np.argsort(-ref[q], kind="stable")[:3])
        np.testing.assert_allclose([h["score"] for h in row], np.sort(ref[q])[::-1][:3], atol=1e-6)
    int8 = quantize.quantize(corpus, "int8", quantize.calibration_ranges(corpus))
    assert len(semantic_search(queries, int8, k=2)[0]) == 2
    with pytest.raises(ValueError, match="dim="):
        semantic_search(queries, quantize.quantize(corpus, "ubinary"), precision="ubinary")


def test_embedder_precisions_calibration_saved_and_bad_values(minilm, embedded, tmp_path):
    texts = real_texts.sts_sentences(50)
    with pytest.raises(ValueError, match="calibrate"):
        minilm.embed(texts, precision="int8")
    with pytest.raises(ValueError, match="precision='int4' is not one of"):
        minilm.embed(texts, precision="int4")
    calibration = minilm.calibrate(real_texts.scifact_docs(300))
    np.testing.assert_allclose(calibration, embedded[0], atol=1e-6)
    try:
        for precision in PRECISIONS:
            for dim in (384, 128):
                got = minilm.embed(texts, precision=precision, dim=dim)
                ranges = quantize.ranges_at(calibration, dim)
                np.testing.assert_array_equal(got, quantize.quantize(minilm.embed(texts, dim=dim), precision, ranges))
    finally:
        minilm.calibration = None
    with pytest.raises(ValueError, match="at least|N >= 2"):
        quantize.calibration_ranges(embedded[0][:1])
    with pytest.raises(ValueError, match=r"ranges must be \[2, 384\]"):
        quantize.quantize(embedded[1], "uint8", np.zeros((2, 10)))


def test_evaluate_task_scores_the_quantised_vectors(minilm, embedded):
    calibration = embedded[0]
    data = tasks.load_task_data(tasks.resolve_tasks(["STSBenchmark"])[0])
    a, b, gold = data.sentences1, data.sentences2, data.scores
    unique = sorted(set(a) | set(b))
    floats = dict(zip(unique, minilm.embed(unique, progress=False)))  # one embedding per text, both paths
    enc = lambda texts, task=None, titles=None: np.stack([floats[t] for t in texts])  # noqa: E731
    plain = runner.evaluate_task(enc, "STSBenchmark", use_prompts=False)
    ranges = quantize.calibration_ranges(calibration)
    for precision in ("float32", "int8", "binary"):
        res = runner.evaluate_task(enc, "STSBenchmark", use_prompts=False, precision=precision, calibration=calibration)
        assert res["precision"] == precision
        if precision == "float32":
            assert res["main_score"] == plain["main_score"]
            continue
        # by hand: the test pairs quantised, cosine of the levels / +-1 bits, Spearman against gold
        qa = quantize.as_float(quantize.quantize(enc(a), precision, ranges), precision, 384)
        qb = quantize.as_float(quantize.quantize(enc(b), precision, ranges), precision, 384)
        cos = np.sum(qa * qb, 1) / np.linalg.norm(qa, axis=1) / np.linalg.norm(qb, axis=1)
        assert res["main_score"] == pytest.approx(scipy.stats.spearmanr(cos, gold).statistic, abs=1e-6)
        assert abs(res["main_score"] - plain["main_score"]) < 0.05  # quantisation costs little on STS
