"""Task registry and loaders: counts match shared/data/README.md; user data and its errors."""
import gzip
import json

import numpy as np
import pytest

from gemini_embed.eval import DataFormatError, FAMILIES, GROUPS, REGISTRY, data_root, load_task_data, resolve_tasks
from gemini_embed.eval import datasets as ds
from gemini_embed.eval.tasks import DEV_TASKS


def load(name):
    (task,) = resolve_tasks([name])
    return load_task_data(task)


def test_data_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMINI_EMBED_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root("/x/y").as_posix() == "/x/y"
    monkeypatch.delenv("GEMINI_EMBED_DATA")
    assert data_root().parts[-2:] == ("shared", "data")


def test_shared_data_is_the_documented_data():
    """The data root holds the files its MD5SUMS names, and STS Benchmark test loads as documented."""
    import hashlib

    root = data_root()
    sums = dict(reversed(line.split(None, 1)) for line in (root / "MD5SUMS").read_text().splitlines() if line)
    for name in ("./sts/stsbenchmark/sts-test.csv", "./scifact/qrels/test.tsv", "./banking77/test.csv"):
        assert hashlib.md5((root / name).read_bytes()).hexdigest() == sums[name], name
    sts = resolve_tasks("STSBenchmark")[0].load(root)
    assert len(sts.sentences1) == 1379 and sts.scores.min() == 0.0 and sts.scores.max() == 5.0


def test_names_families_groups():
    assert [t.name for t in resolve_tasks("STS17")] == [f"STS17:{s}" for s in
                                                       ("ar-ar", "en-ar", "es-es", "es-en", "es-en-wmt", "en-en")]
    assert len(FAMILIES["Tatoeba"]) == 112
    assert [t.name for t in resolve_tasks("AmazonCounterfactualClassification")] == [
        f"AmazonCounterfactualClassification:{s}" for s in ("en", "en-ext", "de", "ja")]
    assert [t.name for t in resolve_tasks("STSBenchmark, SciFact,STSBenchmark")] == ["STSBenchmark", "SciFact"]
    every = {t.name for t in resolve_tasks("all")}
    dev = {"STSBenchmark:dev", "SciFact:dev", "Banking77Classification:dev"}  # for selection: in no group
    assert every == set(REGISTRY) - dev and set(DEV_TASKS.values()) == dev
    for group in ("sts", "retrieval", "classification", "clustering", "pair_classification", "bitext", "quick"):
        assert resolve_tasks(group)
    assert {t.type for t in resolve_tasks("retrieval")} == {"retrieval"}
    assert set(GROUPS["quick"]) <= every
    with pytest.raises(KeyError, match="unknown task"):
        resolve_tasks("NoSuchTask")


def test_prompts_named_per_task():
    assert REGISTRY["SciFact"].query_task == "fact checking" and REGISTRY["SciFact"].document_task == "document"
    assert REGISTRY["CoSQA"].query_task == "code retrieval"
    assert REGISTRY["STSBenchmark"].query_task == "sentence similarity"
    assert REGISTRY["Banking77Classification"].query_task == "classification"
    assert REGISTRY["TwentyNewsgroupsClustering"].query_task == "clustering"


def test_sts_counts():
    d = load("STSBenchmark")
    assert len(d.sentences1) == len(d.sentences2) == len(d.scores) == 1379
    assert d.scores.min() >= 0 and d.scores.max() <= 5
    for name, n in [("STS12", 3108), ("STS13", 1500), ("STS14", 3750), ("STS15", 3000), ("STS16", 1186)]:
        assert len(load(name).scores) == n, name
    for task in resolve_tasks("STS17"):
        assert len(load_task_data(task).scores) == 250, task.name
    # track2 has English in sentence1 and Arabic in sentence2, as MTEB's "en-ar" name says
    d = load("STS17:en-ar")
    assert any("\u0600" <= ch <= "\u06ff" for ch in d.sentences2[0])
    assert not any("\u0600" <= ch <= "\u06ff" for ch in d.sentences1[0])


def test_retrieval_counts():
    d = load("SciFact")
    assert len(d.corpus) == 5183 and len(d.queries) == 1109
    assert len(d.qrels) == 300 and sum(len(v) for v in d.qrels.values()) == 339
    assert all(doc in d.corpus for rels in d.qrels.values() for doc in rels)
    d = load("Cranfield")
    assert (len(d.corpus), len(d.queries), len(d.qrels)) == (1400, 225, 225)
    assert sum(len(v) for v in d.qrels.values()) == 1612
    assert {r for v in d.qrels.values() for r in v.values()} == {1, 2, 3, 4}
    d = load("CoSQA")
    assert (len(d.corpus), len(d.queries), sum(len(v) for v in d.qrels.values())) == (552, 313, 313)


def test_classification_counts():
    d = load("Banking77Classification")
    assert (len(d.train_texts), len(d.test_texts)) == (10003, 3080)
    assert len(set(d.train_labels)) == len(set(d.test_labels)) == 77
    for sub, train, test in [("en", 4018, 670), ("en-ext", 8000, 1334), ("de", 5600, 934), ("ja", 5600, 934)]:
        d = load(f"AmazonCounterfactualClassification:{sub}")
        assert (len(d.train_texts), len(d.test_texts)) == (train, test), sub
        assert set(d.test_labels) == {0, 1}


def test_clustering_pairs_bitext_reranking_counts():
    d = load("TwentyNewsgroupsClustering")
    assert len(d.texts) == 7532 and len(set(d.labels)) == 20
    d = load("MRPC")
    assert len(d.labels) == 1725 and int(d.labels.sum()) == 1147
    total = sum(len(load_task_data(t).sentences1) for t in resolve_tasks("Tatoeba"))
    assert total == 88877
    assert len(load("Tatoeba:deu-eng").sentences1) == 1000 and len(load("Tatoeba:xho-eng").sentences2) == 142
    d = load("SNLIReranking")
    assert len(d.queries) == 3079 and sum(map(len, d.candidates)) == 9156
    assert all(0 < y.sum() < len(y) and y[0] == 1 for y in d.labels)


# ----------------------------------------------------------------------------- user data
def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_sts_pairs_bitext(tmp_path):
    p = write(tmp_path / "s.tsv", "id\tsentence1\tsentence2\tscore\n1\ta b\tc d\t4.5\n2\te\tf\t0\n")
    (task,) = resolve_tasks([f"sts:{p}"])
    assert task.type == "sts" and task.query_task == "sentence similarity"
    d = load_task_data(task)
    assert d.sentences1 == ["a b", "e"] and d.scores.tolist() == [4.5, 0.0]
    p = write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel\nx\ty\t1\nx\tz\t0\n")
    assert load_task_data(resolve_tasks([f"pair_classification:{p}"])[0]).labels.tolist() == [1, 0]
    p = write(tmp_path / "b.tsv", "sentence1\tsentence2\nhallo\thello\n")
    assert load_task_data(resolve_tasks([f"bitext:{p}"])[0]).sentences2 == ["hello"]


@pytest.mark.parametrize("content, line, message", [
    ("sentence1\tsentence2\n", 1, "lacks column"),
    ("sentence1\tsentence2\tscore\na\tb\t3\nc\td\n", 3, "2 field"),
    ("sentence1\tsentence2\tscore\na\tb\t3\nc\td\thigh\n", 3, "cannot parse 'high'"),
])
def test_custom_sts_errors_name_file_and_line(tmp_path, content, line, message):
    p = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataFormatError, match=f"bad.tsv:{line}: .*{message}"):
        load_task_data(resolve_tasks([f"sts:{p}"])[0])


def test_custom_pair_label_must_be_binary(tmp_path):
    p = write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel\nx\ty\t1\nx\tz\t2\n")
    with pytest.raises(DataFormatError, match="p.tsv:3: label must be 0 or 1"):
        load_task_data(resolve_tasks([f"pair_classification:{p}"])[0])


def test_custom_classification_folder(tmp_path):
    write(tmp_path / "train.csv", 'text,label\n"hello, world",greet\nbye,leave\n')
    write(tmp_path / "test.jsonl", '{"text": "hi", "label": "greet"}\n\n{"text": "ciao", "label": "leave"}\n')
    d = load_task_data(resolve_tasks([f"classification:{tmp_path}"])[0])
    assert d.train_texts == ["hello, world", "bye"] and d.test_labels == ["greet", "leave"]
    write(tmp_path / "test.jsonl", '{"text": "hi", "label": "greet"}\n{"text": "ciao"}\n')
    with pytest.raises(DataFormatError, match=r"test.jsonl:2: missing field\(s\) \['label'\]"):
        load_task_data(resolve_tasks([f"classification:{tmp_path}"])[0])
    with pytest.raises(FileNotFoundError, match="train"):
        load_task_data(resolve_tasks([f"classification:{tmp_path / 'nowhere'}"])[0])


def test_custom_clustering_jsonl(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write("".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in (("a", 1), ("b", 2), ("c", 1))))
    d = load_task_data(resolve_tasks([f"clustering:{p}"])[0])
    assert d.texts == ["a", "b", "c"] and d.labels == [1, 2, 1]
    p = write(tmp_path / "c.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 2\n')
    with pytest.raises(DataFormatError, match="c.jsonl:2: malformed: invalid JSON"):
        load_task_data(resolve_tasks([f"clustering:{p}"])[0])
    # Bad UTF-8 in a user's file: the file and line, not a bare UnicodeDecodeError.
    p = tmp_path / "u.tsv"
    p.write_bytes(b"sentence1\tsentence2\tscore\nok\tfine\t1\nbad \xff\tx\t2\n")
    with pytest.raises(DataFormatError, match=r"u.tsv:3: invalid_utf8: byte 4"):
        load_task_data(resolve_tasks([f"sts:{p}"])[0])


def make_beir(folder, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"):
    (folder / "qrels").mkdir(parents=True)
    write(folder / "corpus.jsonl", '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    write(folder / "queries.jsonl", '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    write(folder / "qrels" / "test.tsv", qrels)
    return folder


def test_custom_beir_folder(tmp_path):
    d = load_task_data(resolve_tasks([f"retrieval:{make_beir(tmp_path / 'ok')}"])[0])
    assert d.corpus == {"d1": ("T", "one"), "d2": ("", "two")} and d.qrels == {"q1": {"d1": 1}}
    bad = make_beir(tmp_path / "bad", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td9\t1\n")
    with pytest.raises(DataFormatError, match=r"test.tsv:3: unknown_id: corpus-id 'd9' is not in corpus.jsonl"):
        load_task_data(resolve_tasks([f"retrieval:{bad}"])[0])


def test_several_own_data_specs_in_one_list_and_commas_in_paths(tmp_path):
    sts = write(tmp_path / "a,b.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n")
    beir = make_beir(tmp_path / "beir")
    names = [t.name for t in resolve_tasks(f"retrieval:{beir},sts:{sts},STSBenchmark")]
    assert names == [f"retrieval:{beir}", f"sts:{sts}", "STSBenchmark"]  # the comma in a,b.tsv is kept
    assert load_task_data(resolve_tasks(f"sts:{sts}")[0]).sentences1 == ["a", "c"]


def test_qrels_split_is_chosen_and_a_missing_one_names_the_splits(tmp_path):
    beir = make_beir(tmp_path / "beir")
    (beir / "qrels" / "test.tsv").rename(beir / "qrels" / "train.tsv")
    with pytest.raises(FileNotFoundError, match=r"qrels: no test.tsv\[.gz\] \(splits here: train\)"):
        load_task_data(resolve_tasks([f"retrieval:{beir}"])[0])
    (task,) = resolve_tasks([f"retrieval:{beir}"], qrels_split="train")
    assert load_task_data(task).qrels == {"q1": {"d1": 1}}


def test_stsbenchmark_reader_reports_short_line(tmp_path):
    (tmp_path / "sts" / "stsbenchmark").mkdir(parents=True)
    write(tmp_path / "sts" / "stsbenchmark" / "sts-test.csv", "g\tf\t2012\t1\t2.5\ta\tb\ng\tf\t2012\t2\t3.0\tonly\n")
    with pytest.raises(DataFormatError, match="sts-test.csv:2: 6 field"):
        ds.load_stsbenchmark(tmp_path)
    ok = write(tmp_path / "x.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n")
    assert np.isfinite(ds.load_sts_tsv(ok).scores).all()


def test_degenerate_evaluation_sets_are_errors_not_scores(tmp_path):
    """Sets on which the metric is undefined or meaningless fail, naming the file (they used to
    score nan, or v-measure 1.0, or crash with a KeyError)."""
    header = "sentence1\tsentence2\tscore\n"
    for name, body, found in (("empty.tsv", "", "0 pair"), ("flat.tsv", "a\tb\t3\nc\td\t3\n", "2 pair.*1 distinct score")):
        p = write(tmp_path / name, header + body)
        with pytest.raises(DataFormatError, match=f"{name}: {found}.*at least two pairs with different scores"):
            load_task_data(resolve_tasks([f"sts:{p}"])[0])
    for name, rows in (("one.jsonl", [("a", 1)]), ("singletons.jsonl", [("a", 1), ("b", 2)])):
        p = write(tmp_path / name, "".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in rows))
        with pytest.raises(DataFormatError, match=f"{name}: .*clustering needs at least two clusters"):
            load_task_data(resolve_tasks([f"clustering:{p}"])[0])
    p = make_beir(tmp_path / "nothing_relevant", "query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(DataFormatError, match="nothing_relevant: 2 document.*a relevant one per query"):
        load_task_data(resolve_tasks([f"retrieval:{p}"])[0])
