"""Hard-negative mining: RRF and selection by hand, mining against a brute-force ranking, resuming,
and the Gemma 3 query-likelihood scorer against Hugging Face transformers on real SciFact pairs."""
import json
import os

import numpy as np
import pytest
from reference_libs import require

from gemini_embed.llm.mining import MiningConfig, mine, rrf, select_negatives


def test_rrf_hand_computed():
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    # a: ranks 1 and 2; b: 2; c: 3 and 1; d: 3.
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert fused.keys() == expected.keys()
    for key, value in expected.items():
        assert fused[key] == pytest.approx(value, rel=1e-12)
    assert rrf([["x", "y"]], k=0) == {"x": 1.0, "y": 0.5}
    with pytest.raises(ValueError, match="-1"):
        rrf([["x"]], k=-1)


def test_select_negatives_by_hand():
    llm = np.array([-10.0, -50.0, -20.0, -40.0, -30.0])
    # Retrieval ranks 1..5; LLM ranks: 0->1, 2->2, 4->3, 3->4, 1->5. Fused (k=60):
    #   0: 1/61+1/61=.032787  1: 1/62+1/65=.031513  2: 1/63+1/62=.032002
    #   3: 1/64+1/64=.031250  4: 1/65+1/63=.031258   -> lowest two: 3, then 4.
    chosen, extra = select_negatives([101, 102, 103, 104, 105], llm, 2, 60.0)
    assert chosen == [3, 4]
    assert extra["fused"][3] == pytest.approx(2 / 64, abs=1e-6)
    assert select_negatives([101, 102, 103], None, 2, 60.0)[0] == [0, 1]
    assert select_negatives([101], None, 3, 60.0)[0] == [0]  # fewer candidates than asked


class TableEmbedder:
    """Embeddings looked up by text: the ranking is whatever the test's vectors say."""
    name = "table"

    def __init__(self, table):
        self.table = table

    def embed(self, texts, task=None, titles=None, batch_size=64):
        return np.stack([self.table[t] for t in texts])


class FakeScorer:
    """A deterministic stand-in for the LLM; optionally breaks (like Ctrl-C) on its n-th call."""
    config = {"name": "fake"}

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def score(self, queries, passages):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return np.array([-float(sum(map(ord, q + t + x)) % 97) for q, (t, x) in zip(queries, passages)])


def _toy(n_docs=40, n_queries=11, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    corpus = {f"d{j}": (f"title {j}", f"text {j}") for j in range(n_docs)}
    queries = {f"q{i}": f"query {i}" for i in range(n_queries)}
    table = {f"text {j}": rng.normal(size=dim) for j in range(n_docs)}
    table.update({f"query {i}": rng.normal(size=dim) for i in range(n_queries)})
    return corpus, queries, TableEmbedder(table)


def _reference_ranking(table, query, n_docs):
    """Doc ids by cosine similarity, best first (brute force, independent of search.top_k)."""
    q = table[query] / np.linalg.norm(table[query])
    sims = [q @ table[f"text {j}"] / np.linalg.norm(table[f"text {j}"]) for j in range(n_docs)]
    return [f"d{j}" for j in np.argsort(sims)[::-1]]


def test_mining_drops_positives_and_respects_the_window(tmp_path):
    corpus, queries, emb = _toy()
    ranked = {q: _reference_ranking(emb.table, text, len(corpus)) for q, text in queries.items()}
    # Positives at reference ranks 1 and 6 (inside the window 4:12); a score-0 judgement at rank 4
    # is no positive, so it stays a candidate.
    qrels = {q: {ranked[q][0]: 1, ranked[q][5]: 2, ranked[q][3]: 0} for q in queries}
    cfg = MiningConfig(top_k=15, rank_window=(4, 12), num_negatives=3, task="fact checking", query_batch=4)
    stats = mine(emb, queries, corpus, qrels, tmp_path / "out.jsonl", config=cfg, progress=False)
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    details = [json.loads(x) for x in (tmp_path / "out.details.jsonl").read_text().splitlines()]
    assert stats["queries"] == len(queries) and len(details) == len(queries)
    assert len(records) == 2 * len(queries)  # one line per positive qrel; score 0 makes none
    for d in details:
        q = d["query_id"]
        window = [x for x in ranked[q][3:12] if qrels[q].get(x, 0) <= 0]
        assert d["candidate_ids"] == window
        assert d["negative_ids"] == window[:3]
        assert ranked[q][3] in d["negative_ids"]  # the score-0 document is a fair negative
        assert d["positive_ranks"] == [1, 6]
    by_query = {}
    for r in records:
        assert r.keys() == {"query", "positive", "title", "negatives", "task"}
        assert r["task"] == "fact checking" and len(r["negatives"]) == 3
        assert r["positive"] not in [n["text"] for n in r["negatives"]]
        by_query.setdefault(r["query"], []).append(r)
    d0 = details[0]
    r0 = by_query[queries[d0["query_id"]]][0]
    assert r0["negatives"] == [{"text": corpus[x][1], "title": corpus[x][0]} for x in d0["negative_ids"]]
    assert not (tmp_path / "out.jsonl.progress").exists()


def test_rescored_mining_resumes_to_an_identical_file(tmp_path):
    corpus, queries, emb = _toy()
    qrels = {q: {"d0": 1} for q in queries}
    cfg = MiningConfig(top_k=12, rank_window=(2, 12), num_negatives=2, query_batch=3)  # 4 chunks
    mine(emb, queries, corpus, qrels, tmp_path / "a.jsonl", config=cfg, scorer=FakeScorer(), progress=False)

    broken = FakeScorer(fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        mine(emb, queries, corpus, qrels, tmp_path / "b.jsonl", config=cfg, scorer=broken, progress=False)
    assert not (tmp_path / "b.jsonl").exists()
    done = sorted(p.name for p in (tmp_path / "b.jsonl.progress").glob("chunk_*[0-9].jsonl"))
    assert done == ["chunk_00000.jsonl", "chunk_00001.jsonl"]
    with pytest.raises(ValueError, match="num_negatives"):  # a restart with other settings is refused
        mine(emb, queries, corpus, qrels, tmp_path / "b.jsonl", config=MiningConfig(
            top_k=12, rank_window=(2, 12), num_negatives=1, query_batch=3), scorer=FakeScorer(), progress=False)
    resumed = FakeScorer()
    mine(emb, queries, corpus, qrels, tmp_path / "b.jsonl", config=cfg, scorer=resumed, progress=False)
    assert resumed.calls == 2  # only the two unfinished chunks were scored
    for suffix in (".jsonl", ".details.jsonl"):
        assert (tmp_path / f"b{suffix}").read_bytes() == (tmp_path / f"a{suffix}").read_bytes()
    with pytest.raises(FileExistsError, match="b.jsonl"):
        mine(emb, queries, corpus, qrels, tmp_path / "b.jsonl", config=cfg, scorer=resumed, progress=False)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="5:40.*top_k=30"):
        MiningConfig(top_k=30, rank_window=(5, 40))
    with pytest.raises(ValueError, match="num_negatives.*0"):
        MiningConfig(num_negatives=0)


def test_command_refuses_the_test_split(capsys):
    from gemini_embed import mine as mine_cmd

    with pytest.raises(SystemExit):
        mine_cmd.main(["--model", "all-minilm-l6-v2", "--beir", "x", "--split", "test", "--output", "o.jsonl"])
    assert "refusing --split 'test'" in capsys.readouterr().err


# ------------------------------------------------------------------ the LLM scorer vs transformers

def _scifact_pairs():
    from gemini_embed.eval.readers import read_beir

    corpus, queries, qrels = read_beir(os.path.join(os.environ["GEMINI_EMBED_DATA"], "scifact"), "train")
    by_length = sorted(corpus, key=lambda d: len(corpus[d][1]))
    qids = list(qrels)[:3]
    pairs = []
    for i, q in enumerate(qids):
        positive = next(iter(qrels[q]))
        pairs.append((queries[q], corpus[positive]))  # usually truncated: abstracts are long
        pairs.append((queries[q], corpus[by_length[40 + i]]))  # short: fits whole
    return pairs


@pytest.mark.slow
def test_scorer_matches_transformers_on_scifact_pairs():
    torch = require("torch")
    transformers = require("transformers")
    from gemini_embed.llm.scoring import QueryLikelihoodScorer
    from gemini_embed.weights.packaged import gemma3_270m_gguf

    pairs = _scifact_pairs()
    scorer = QueryLikelihoodScorer(max_passage_tokens=128, batch_size=4)  # 6 pairs: a padded second batch
    got = scorer.score([q for q, _ in pairs], [p for _, p in pairs])
    ids = scorer.pair_ids([q for q, _ in pairs], [p for _, p in pairs])

    path = str(gemma3_270m_gguf())
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    truncated = 0
    for (query, (title, text)), (x, nq) in zip(pairs, ids):
        full = f"Passage: {title} {text}\nQuery: {query}"
        if len(tok(full)["input_ids"]) <= len(x):  # untruncated: our pieces = HF's tokenizer on the string
            assert tok(full)["input_ids"] == x
        else:
            truncated += 1
    assert 0 < truncated < len(pairs)
    for (x, nq), value in zip(ids, got):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([x])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        start = len(x) - nq
        ref = sum(float(logp[t - 1, x[t]]) for t in range(start, len(x)))
        print(f"{len(x)} tokens, {nq} query tokens: ours {value:.5f} transformers {ref:.5f} diff {value - ref:.2e}")
        assert abs(value - ref) <= 5e-4, (value, ref)  # seen: <= 7e-5 nats on sums of about -50
    # On these three claims the cited abstract is likelier than an unrelated short one.
    assert all(got[i] > got[i + 1] for i in range(0, len(pairs), 2)), got
    # Batching and padding do not change a pair's score.
    alone = scorer.score([pairs[1][0]], [pairs[1][1]])
    assert abs(alone[0] - got[1]) <= 1e-4


@pytest.mark.slow
def test_command_on_a_small_beir_folder(tmp_path):
    """The command end to end with the real MiniLM: 12 train claims over their abstracts + 100 others."""
    import gzip

    from gemini_embed import mine as mine_cmd
    from gemini_embed.eval.readers import read_beir

    corpus, queries, qrels = read_beir(os.path.join(os.environ["GEMINI_EMBED_DATA"], "scifact"), "train")
    qrels = dict(list(qrels.items())[:12])
    keep = {d for q in qrels.values() for d in q} | set(list(corpus)[:100])
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in keep:
            f.write(json.dumps({"_id": d, "title": corpus[d][0], "text": corpus[d][1]}) + "\n")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qrels))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, ds in qrels.items() for d, s in ds.items()))
    out = tmp_path / "mined.jsonl"
    stats = mine_cmd.main(["--model", "all-minilm-l6-v2", "--beir", str(folder), "--output", str(out),
                           "--task", "fact checking", "--top_k", "10", "--rank_window", "2:10", "--num_negatives", "2"])
    assert stats["queries"] == 12 and stats["records"] == sum(len(v) for v in qrels.values())
    assert stats["negatives_per_query"] == {"2": 12}
    details = [json.loads(x) for x in (tmp_path / "mined.details.jsonl").read_text().splitlines()]
    # MiniLM ranks most cited abstracts first among 100 distractors: a sanity check of the retrieval.
    assert sum(1 in d["positive_ranks"] for d in details) >= 8, [d["positive_ranks"] for d in details]
