"""The published all-MiniLM-L6-v2 MTEB scores reproduce with our evaluators (use_prompts=False).

The reference encoder is sentence-transformers on the packaged weights, truncating at 256
tokens as the model's config says (at 512 SciFact moves to 0.654). SciFact takes minutes on
2 CPU cores.
"""
import pytest
from reference_libs import require

from gemini_embed.eval import evaluate_task

pytestmark = pytest.mark.slow

PUBLISHED = {  # MTEB results repo (mteb 1.12.75), test split
    "STSBenchmark": ("cosine_spearman", 0.8203),
    "Banking77Classification": ("accuracy", 0.8004),
    "SciFact": ("ndcg_at_10", 0.6451),
}


@pytest.fixture(scope="module")
def minilm_encode():
    st = require("sentence_transformers")
    from gemini_embed.weights import packaged

    model = st.SentenceTransformer(str(packaged.minilm_l6_v2_dir()), device="cpu")
    model.max_seq_length = 256

    def encode(texts, task=None, titles=None):
        assert task is None and titles is None, "use_prompts=False passes raw text only"
        return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return encode


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_minilm_reproduces_published_score(minilm_encode, name):
    metric, published = PUBLISHED[name]
    result = evaluate_task(minilm_encode, name, use_prompts=False)
    assert result["metric"] == metric
    assert result["main_score"] == pytest.approx(published, abs=0.0005), result["scores"]


def test_library_minilm_port_reproduces_stsbenchmark():
    """The library's own JAX all-MiniLM-L6-v2 (Embedder) through the same evaluator; it ignores
    prompts, so use_prompts=True must give the same score."""
    import gemini_embed as ge

    embed = ge.Embedder.from_pretrained("all-minilm-l6-v2").embed
    for use_prompts in (False, True):
        result = evaluate_task(lambda texts, task=None, titles=None: embed(texts, task=task, titles=titles,
                                                                            progress=False),
                               "STSBenchmark", use_prompts=use_prompts)
        assert result["main_score"] == pytest.approx(PUBLISHED["STSBenchmark"][1], abs=0.0005)
