"""The tfds builders and the grain pipeline: preparation, prompts, determinism, restore after k
batches, mixtures, host slices and epochs, all on the real shared data."""
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from gemini_embed.data import builders, pipeline, sources as src, store
from gemini_embed.train.checkpoint import _decode_data, _encode_data

from data_helpers import SEED, SHAPE, Recording, recorded_sources

DATA = pathlib.Path(os.environ["GEMINI_EMBED_DATA"])


def _batches(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_prepared_splits_hold_what_the_readers_read(quick_sources):
    for source in quick_sources:
        want = list(source.spec.readers[source.split](src.Problems("fail")))
        got = source.records.__getitems__(list(range(len(source))))
        key = lambda e: (e["origin"], e["query"], e["positive"], tuple(e["negatives"]))  # noqa: E731
        dec = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        assert sorted(key({k: dec(v) if k != "negatives" else [dec(x) for x in v] for k, v in g.items()})
                      for g in got) == sorted(map(key, want)), source.name
    assert [len(s) for s in quick_sources] == [919, 1406, 2753, 2954]


def test_preparation_report_and_bad_input(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b'{"query": "q1", "positive": "p1", "negatives": ["n1"]}\n{"query": "q2"}\n'
                     b'{"query": "q3", "positive": "p3 \xff"}\n{"query": "q4", "positive": "p4"}\n')
    with pytest.raises(src.DataError, match=f"{path}:2: missing_field"):
        store.prepare(builders.file_spec(str(path)), tmp_path / "tfds", on_error="fail")
    report = store.prepare(builders.file_spec(str(path)), tmp_path / "tfds", on_error="skip")
    assert report["splits"]["train"] == {"examples": 2, "with_negatives": 1}
    assert report["skipped"] == {"invalid_utf8": 1, "missing_field": 1}
    out = capsys.readouterr().out
    assert "prepared file-mine_jsonl: train 2 (1 with negatives); skipped 2 bad input(s)" in out
    assert "Downloading" not in out  # tfds' line: nothing is downloaded
    # prepared once: a second call reuses it, and fail mode refuses data that skipped bad input
    assert store.prepare(builders.file_spec(str(path)), tmp_path / "tfds") == report
    with pytest.raises(src.DataError, match="prepared with on_error='skip'"):
        store.prepare(builders.file_spec(str(path)), tmp_path / "tfds", on_error="fail")
    with pytest.raises(ValueError, match="data.on_error must be 'skip' or 'fail', got 'Fail'"):
        store.prepare(builders.file_spec(str(path)), tmp_path / "tfds", on_error="Fail")
    ds = pipeline.open_sources([str(path)], data_dir=tmp_path / "tfds", verbose=False)[0]
    assert sorted(r["query"] for r in ds.records.__getitems__([0, 1])) == [b"q1", b"q4"]
    # A file with nothing usable: the file and why, not tfds' "No examples were yielded".
    bad = tmp_path / "all_bad.jsonl"
    bad.write_text('{"query": "q1"}\n{"positive": "p2"}\n')
    with pytest.raises(src.DataError, match=r"all_bad.jsonl: no_examples: .*split train has no usable example; "
                                            r"2 bad input\(s\) skipped: missing_field 2"):
        store.prepare(builders.file_spec(str(bad)), tmp_path / "tfds")


def test_test_split_refused_unless_allowed(prepared_dir):
    with pytest.raises(ValueError, match="is a test split"):
        pipeline.open_sources(["mrpc-test"], data_dir=prepared_dir, verbose=False)
    assert len(pipeline.open_sources(["mrpc-test"], data_dir=prepared_dir, allow_test_split=True,
                                     verbose=False)[0]) == 1147
    with pytest.raises(ValueError, match="unknown training source 'nonsense-train'"):
        pipeline.open_sources(["nonsense-train"], data_dir=prepared_dir)
    # A path into the benchmark data is no way around the guard (STS12's test pairs, by two spellings) ...
    for path in (DATA / "sts" / "sts12" / "test.tsv", DATA / "sts" / "sts13" / ".." / "sts12" / "test.tsv"):
        with pytest.raises(ValueError, match="is a test split"):
            pipeline.open_sources([f"scored:{path}"], data_dir=prepared_dir, verbose=False)
    assert builders.resolve_source(f"beir:{DATA / 'scifact'}")[1] == "train"  # BEIR reads qrels/train.tsv
    # ... while a user's own file of that name is theirs to train on.
    own = prepared_dir.parent / "own" / "test.tsv"
    own.parent.mkdir(exist_ok=True)
    own.write_text("sentence1\tsentence2\tscore\na man sings\ta man is singing\t4.5\n")
    assert len(pipeline.open_sources([f"scored:{own}"], data_dir=prepared_dir, verbose=False)[0]) == 1


def test_prompts_ids_and_negatives(quick_sources, tokenizer, prepared_dir):
    pipe = pipeline.Pipeline(quick_sources, tokenizer, SHAPE, seed=0, threads=0)
    seen = set()
    for b in _batches(pipe.iterator(), 40):
        name = pipe.names[int(b["dataset"])]
        q = tokenizer.decode(b["query_tokens"][0][b["query_mask"][0]].tolist())
        p = tokenizer.decode(b["positive_tokens"][0][b["positive_mask"][0]].tolist())
        if name == "scifact-train":
            assert q.startswith("task: fact checking | query: ") and p.startswith("title: ") and " | text: " in p
        else:
            assert q.startswith("task: sentence similarity | query: ")
            assert p.startswith("task: sentence similarity | query: ")
        assert b["negative_present"].all() == (name == "snli-triplets-validation")
        assert (b["negative_mask"][~b["negative_present"]].sum(-1) == 2).all()  # absent: BOS, EOS only
        seen.add(name)
    assert len(seen) == 4
    # identical targets (classification labels) get identical ids, for the loss's duplicate mask
    bank = pipeline.open_sources(["banking77-train"], data_dir=prepared_dir, verbose=False)
    b = next(pipeline.Pipeline(bank, tokenizer, dataclasses.replace(SHAPE, global_batch_size=64), threads=0).iterator())
    labels = [tokenizer.decode(t[m].tolist()) for t, m in zip(b["positive_tokens"], b["positive_mask"])]
    for i in range(64):
        for j in range(64):
            assert (labels[i] == labels[j]) == (b["positive_ids"][i] == b["positive_ids"][j])


def test_scored_source_batches_carry_their_scores(prepared_dir, tokenizer):
    """With a scored source in the mixture every batch has pair_score: the gold scores of its
    pairs for the scored source, NaN for the others (the step then trains NCE on those)."""
    srcs = pipeline.open_sources(["stsb-scored-train", "mrpc-train"], data_dir=prepared_dir, verbose=False)
    shape = dataclasses.replace(SHAPE, num_negatives=0, scored=True)
    pipe = pipeline.Pipeline(srcs, tokenizer, shape, seed=0, threads=0)
    gold = {(r["query"], r["positive"]): r["score"] for r in
            srcs[0].records.__getitems__(list(range(len(srcs[0]))))}
    assert len(gold) > 5000
    seen = set()
    for b in _batches(pipe.iterator(), 12):
        name = pipe.names[int(b["dataset"])]
        seen.add(name)
        if name == "mrpc-train":
            assert np.isnan(b["pair_score"]).all()
            continue
        strip = len("task: sentence similarity | query: ")
        for r in range(shape.global_batch_size):
            q = tokenizer.decode(b["query_tokens"][r][b["query_mask"][r]].tolist())[strip:]
            p = tokenizer.decode(b["positive_tokens"][r][b["positive_mask"][r]].tolist())[strip:]
            if (q, p) in gold:  # pairs cut by query_len / positive_len cannot be looked up
                assert b["pair_score"][r] == np.float32(gold[q, p])
        assert np.isfinite(b["pair_score"]).all() and len(set(b["pair_score"].tolist())) > 1
    assert seen == {"stsb-scored-train", "mrpc-train"}
    assert "pair_score" not in next(pipeline.Pipeline(srcs[1:], tokenizer, dataclasses.replace(shape, scored=False),
                                                      threads=0).iterator())


def test_teacher_embeddings_are_the_teachers_embed_of_the_raw_texts(quick_sources, tokenizer):
    """Distillation targets: the real all-MiniLM-L6-v2 embeds each row's query, positive and hard
    negative as raw text (documents as `title text`, no prompts), absent negatives as ''."""
    from gemini_embed.embed import Embedder

    teacher = Embedder.from_pretrained("all-minilm-l6-v2")
    pipe = pipeline.Pipeline(quick_sources, tokenizer, SHAPE, seed=0, threads=0, teacher=teacher)
    assert pipe.teacher_dim == 384
    seen = set()
    for b in _batches(pipe.iterator(), 12):
        source = quick_sources[int(b["dataset"])]
        seen.add(source.name)
        rows = source.records.__getitems__([int(r) for r in _row_ids(pipe, b)])
        raw = [pipeline.teacher_texts(r) for r in rows]
        if source.name == "scifact-train":  # a document: its title first
            assert raw[0][1].startswith(rows[0]["title"].decode())
        np.testing.assert_allclose(b["teacher_query"], teacher.embed([q for q, _, _ in raw]), atol=1e-6)
        np.testing.assert_allclose(b["teacher_positive"], teacher.embed([p for _, p, _ in raw]), atol=1e-6)
        negs = [negs[0] if negs else "" for _, _, negs in raw]
        np.testing.assert_allclose(b["teacher_negative"][:, 0], teacher.embed(negs), atol=1e-6)
        assert b["teacher_negative"].shape == (SHAPE.global_batch_size, 1, 384)
    assert len(seen) >= 3


def _row_ids(pipe, batch):
    """The source rows of a batch, found by their ids among the source's rows (the order of the batch)."""
    source = pipe.sources[int(batch["dataset"])]
    records = source.records.__getitems__(list(range(len(source))))
    by_id = {}
    for r, rec in enumerate(records):
        q, p, _ = pipeline.prompt_example(rec, source.spec, True)
        by_id.setdefault((pipeline.text_id(q), pipeline.text_id(p)), r)
    return [by_id[int(qi), int(pi)] for qi, pi in zip(batch["query_ids"], batch["positive_ids"])]


def test_same_seed_same_batches_and_restore_after_k(quick_sources, tokenizer):
    make = lambda seed: pipeline.Pipeline(quick_sources, tokenizer, SHAPE, seed=seed)  # noqa: E731
    pipe = make(7)
    a, b = _batches(pipe.iterator(), 12), _batches(make(7).iterator(), 12)
    assert all(_same(x, y) for x, y in zip(a, b))
    c = _batches(make(8).iterator(), 12)
    assert not all(_same(x, y) for x, y in zip(a, c))
    # interrupted after k batches, state through the checkpoint's JSON encoding, resumed in a new pipeline
    for k in (0, 5, 9):
        it = pipe.iterator()
        _batches(it, k)
        state = _decode_data(_encode_data(pipe.state(it)))
        assert state["grain"] == {"next_index": k}
        resumed = _batches(make(7).iterator(state), 12 - k)
        assert all(_same(x, y) for x, y in zip(resumed, a[k:]))


def _all_positive_ids(source, uses_prompts=True):
    records = source.records.__getitems__(list(range(len(source))))
    return {pipeline.text_id(pipeline.prompt_example(r, source.spec, uses_prompts)[1]) for r in records}


def test_every_batch_from_one_dataset_by_the_mixture(quick_sources, tokenizer):
    rates = [0.4, 0.3, 0.2, 0.1]
    pipe = pipeline.Pipeline(quick_sources, tokenizer, SHAPE, rates=rates, seed=3)
    ids = [_all_positive_ids(s) for s in quick_sources]
    selection = pipeline.MixtureSelection(rates, 3)
    for k, b in enumerate(_batches(pipe.iterator(), 150)):
        d = int(b["dataset"])
        assert d == selection[k][0]
        assert set(b["positive_ids"].tolist()) <= ids[d]
        assert not any(set(b["positive_ids"].tolist()) & ids[e] - ids[d] for e in range(4) if e != d)


def test_mixture_rates_over_10000_batches():
    for rates in ([0.5, 0.3, 0.2], [0.7, 0.2, 0.05, 0.05], [1, 1]):
        sel = pipeline.MixtureSelection(rates, seed=11)
        picks = [sel[k] for k in range(10_000)]
        d = np.array([p[0] for p in picks])
        want = np.asarray(rates, float) / np.sum(rates)
        got = np.bincount(d, minlength=len(rates)) / len(d)
        assert np.abs(got - want).max() < 0.02, (got, want)
        for s in range(len(rates)):  # each source's batches are taken in order, none skipped or repeated
            assert [j for ds, j in picks if ds == s] == list(range(int((d == s).sum())))
        fresh = pipeline.MixtureSelection(rates, seed=11)  # random access: any k alone gives the same answer
        assert [fresh[k] for k in (9_999, 17, 4_096)] == [picks[9_999], picks[17], picks[4_096]]


def test_hosts_read_disjoint_rows_and_join_to_one_process(quick_sources, tokenizer):
    def make(i, n):
        srcs = [dataclasses.replace(s, records=Recording(s.records)) for s in quick_sources]
        return pipeline.Pipeline(srcs, tokenizer, SHAPE, seed=5, process_index=i, process_count=n, threads=0), srcs

    (one, one_src), (h0, h0_src), (h1, h1_src) = make(0, 1), make(0, 2), make(1, 2)
    for g, x, y in zip(_batches(one.iterator(), 20), _batches(h0.iterator(), 20), _batches(h1.iterator(), 20)):
        assert int(g["dataset"]) == int(x["dataset"]) == int(y["dataset"])
        assert _same({k: v for k, v in g.items() if k != "dataset"},
                     {k: np.concatenate([x[k], y[k]]) for k in g if k != "dataset"})
    for s1, a, b in zip(one_src, h0_src, h1_src):
        assert len(a.records.read) == len(b.records.read) == len(s1.records.read)
        for whole, r0, r1 in zip(s1.records.read, a.records.read, b.records.read):
            assert whole == r0 + r1 and not set(r0) & set(r1) and len(r0) == len(r1) == 4


def test_epochs_cover_every_example_once(quick_sources, tokenizer):
    scifact = dataclasses.replace(quick_sources[0], records=Recording(quick_sources[0].records))
    shape = dataclasses.replace(SHAPE, global_batch_size=16, num_negatives=0)
    it = pipeline.Pipeline([scifact], tokenizer, shape, seed=1, threads=0).iterator()
    _batches(it, 2 * 919 // 16 + 1)  # a bit more than two epochs
    rows = [r for batch in scifact.records.read for r in batch]
    first, second = rows[:919], rows[919:2 * 919]
    assert sorted(first) == sorted(second) == list(range(919)) and first != second


def test_two_processes_give_the_global_batches_of_one(quick_sources, tokenizer, prepared_dir, tmp_path):
    """2 processes (jax.distributed, gloo) x 2 CPU devices: each reads disjoint rows, and the global
    arrays they assemble equal the batches of a single process."""
    n_batches = 12
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = pathlib.Path(__file__).with_name("two_hosts.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(script), str(i), "2", str(port), str(prepared_dir), str(tmp_path),
                               str(n_batches)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    one_src = recorded_sources(quick_sources)
    one = _batches(pipeline.Pipeline(one_src, tokenizer, SHAPE, seed=SEED, threads=0).iterator(), n_batches)
    got = np.load(tmp_path / "global.npz")
    assert got["dataset"].tolist() == [int(b["dataset"]) for b in one]
    for name in one[0]:
        if name != "dataset":
            np.testing.assert_array_equal(got[name], np.stack([b[name] for b in one]), err_msg=name)
    rows = [json.loads((tmp_path / f"rows_{i}.json").read_text()) for i in range(2)]
    for s in one_src:
        for whole, r0, r1 in zip(s.records.read, rows[0][s.name], rows[1][s.name], strict=True):
            assert whole == r0 + r1 and not set(r0) & set(r1)


def test_prepare_command_and_fingerprint(tmp_path, capsys):
    from gemini_embed.data import prepare

    path = tmp_path / "pairs.tsv"
    path.write_text("query\tpositive\nq1\tp1\nq2\tp2\n")
    assert prepare.main([str(path), "--dir", str(tmp_path / "tfds")]) == 0
    assert "file-pairs_tsv               train 2" in capsys.readouterr().out
    first = store.prepared_path(builders.file_spec(str(path)), tmp_path / "tfds")
    path.write_text("query\tpositive\nq1\tp1\nq2\tp2\nq3\tp3\n")  # an edited file is prepared again
    report = store.prepare(builders.file_spec(str(path)), tmp_path / "tfds", verbose=False)
    assert report["splits"]["train"]["examples"] == 3
    assert store.prepared_path(builders.file_spec(str(path)), tmp_path / "tfds") != first
    path.write_bytes(b"query\tpositive\nq1\t\xff\n")
    assert prepare.main([str(path), "--dir", str(tmp_path / "tfds"), "--on_error", "fail"]) == 1
    assert f"error: {path}:2: invalid_utf8" in capsys.readouterr().err
