"""Readers of every training format on the real shared data (counts against the data README, and
against independent counts of the raw files), and bad-input handling on small broken files."""
import collections
import csv
import gzip
import json
import os
import pathlib

import pytest

from gemini_embed.data import builders, sources as src

DATA = pathlib.Path(os.environ["GEMINI_EMBED_DATA"])


def _read(name, split, on_error="skip"):
    problems = src.Problems(on_error)
    examples = list(builders.registry(DATA)[name].readers[split](problems))
    return examples, problems


def test_beir_retrieval_counts():
    # README: scifact train 919 qrels / 809 queries, test 339 / 300; cosqa 313; all doc ids exist.
    texts = {}
    with open(DATA / "scifact" / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            texts[q["_id"]] = q["text"]
    for split, rows, queries in (("train", 919, 809), ("test", 339, 300)):
        with open(DATA / "scifact" / "qrels" / f"{split}.tsv") as f:
            ids = {line.split("\t")[0] for line in list(f)[1:]}
        assert len(ids) == queries  # README
        ex, problems = _read("scifact", split)
        # two train claims share their text with another claim: distinct texts, not ids, are compared
        assert (len(ex), len({e["query"] for e in ex}), problems.total) == (rows, len({texts[i] for i in ids}), 0)
    first = ex[0]
    assert first["title"] and first["positive"] and first["origin"] == "qrels/test.tsv:2"
    ex, problems = _read("cosqa", "test")
    assert (len(ex), problems.total) == (313, 0)
    # Cranfield: README 1,612 qrels over 1,400 docs. Docs 471 and 995 have no text, and one qrel
    # points at 995: it is reported (file and line) and skipped, the rest are kept.
    ex, problems = _read("cranfield", "test")
    assert len(ex) == 1611 and problems.by_reason() == {"empty_text": 2, "unknown_id": 1}
    assert any("qrels/test.tsv:865: unknown_id: corpus-id '995'" in m for m in problems.first)
    assert any("corpus.jsonl:471: empty_text" in m for m in problems.first)


def _stsb_rows(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return len(rows), sum(float(r[4]) >= builders.SCORE_THRESHOLD for r in rows)


def test_scored_pairs_and_triplets_counts():
    for split, file, total in (("train", "sts-train.csv", 5749), ("validation", "sts-dev.csv", 1500),
                               ("test", "sts-test.csv", 1379)):
        n, kept = _stsb_rows(DATA / "sts" / "stsbenchmark" / file)
        assert n == total  # README counts
        ex, problems = _read("stsb", split)
        assert (len(ex), problems.total) == (kept, 0)
        assert all(e["score"] != e["score"] for e in ex)  # thresholded pairs carry no score (NaN)
    # The graded source keeps every pair with its gold score, in file order.
    with open(DATA / "sts" / "stsbenchmark" / "sts-train.csv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    ex, problems = _read("stsb-scored", "train")
    assert problems.total == 0 and len(ex) == len(rows) == 5749
    assert [(e["query"], e["positive"], e["score"]) for e in ex] == [(r[5].strip(), r[6].strip(), float(r[4])) for r in rows]
    assert "test" not in builders.registry(DATA)["stsb-scored"].readers and builders.registry(DATA)["stsb-scored"].scored
    counter = collections.Counter()
    for line, row in src.read_table(DATA / "sts" / "sts12" / "test.tsv", src.Problems("fail")):
        counter["rows"] += 1
    assert counter["rows"] == 3108
    # MRPC: README train 4,076 (2,753 paraphrase), test 1,725 (1,147).
    for split, rows, pos in (("train", 4076, 2753), ("test", 1725, 1147)):
        c = collections.Counter()
        ex = list(src.pairs_table(DATA / "mrpc" / f"{split}.tsv", src.Problems("fail"), first="sentence1",
                                  second="sentence2", score="label", threshold=1.0, counter=c))
        assert (c["rows"], c["kept"], len(ex)) == (rows, pos, pos)
    # SNLI pairs: dev 9,842 (3,329 entailment), test 9,824 (3,368); triplets dev 2,954, test 2,929.
    for split, file, rows, ent in (("validation", "dev", 9842, 3329), ("test", "test", 9824, 3368)):
        c = collections.Counter()
        spec_reader = builders.registry(DATA)["snli"].readers[split]
        ex = list(spec_reader.func(*spec_reader.args, src.Problems("fail"), **spec_reader.keywords, counter=c))
        assert (c["rows"], len(ex)) == (rows, ent)
    for split, n in (("validation", 2954), ("test", 2929)):
        ex, problems = _read("snli-triplets", split)
        assert len(ex) == n and problems.total == 0
        assert all(len(e["negatives"]) == 1 and e["negatives"][0] for e in ex)
    with open(DATA / "snli_senteval" / "triplets_dev.tsv", encoding="utf-8") as f:
        first = next(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    ex, _ = _read("snli-triplets", "validation")
    assert (ex[0]["query"], ex[0]["positive"], ex[0]["negatives"]) == (first["anchor"], first["positive"],
                                                                        [first["negative"]])


def test_classification_counts_and_label_texts():
    ex, _ = _read("banking77", "train")
    assert len(ex) == 10003 and len({e["positive"] for e in ex}) == 77
    assert ex[0] == {**ex[0], "query": "I am still waiting on my card?", "positive": "card arrival"}
    assert len(_read("banking77", "test")[0]) == 3080
    for sub, counts in (("en", (4018, 335, 670)), ("en-ext", (8000, 666, 1334)), ("de", (5600, 466, 934)),
                        ("ja", (5600, 466, 934))):
        got = tuple(len(_read(f"amazon-counterfactual-{sub}", s)[0]) for s in ("train", "validation", "test"))
        assert got == counts
    ex, _ = _read("twentynewsgroups", "train")
    assert len(ex) == 11314 and len({e["positive"] for e in ex}) == 20
    with gzip.open(DATA / "twentynewsgroups" / "train_subjects.jsonl.gz", "rt") as f:
        assert ex[0]["positive"] == json.loads(f.readline())["label"]
    assert len(_read("twentynewsgroups", "test")[0]) == 7532


def test_bitext_counts():
    ex, problems = _read("tatoeba", "test")
    assert (len(ex), problems.total) == (88877, 0)  # README: 112 languages, 88,877 pairs
    langs = collections.Counter(e["origin"].split(":")[0].split(".")[1] for e in ex)
    assert len(langs) == 112 and langs["deu-eng"] == 1000 and langs["xho-eng"] == 142
    deu = [e for e in ex if ".deu-eng." in e["origin"]][0]
    assert deu["query"] == "Maria sagte, sie wisse nicht, wo Tom sei."
    assert deu["positive"] == "Mary said she didn't know where Tom was."


def test_graded_file_keeps_every_pair_with_its_score(tmp_path):
    """A user's `graded:` TSV: every row, with its score, on a scored spec (CoSENT); `scored:` keeps >= 4."""
    with open(DATA / "sts" / "stsbenchmark" / "sts-dev.csv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][:200]
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{r[5]}\t{r[6]}\t{r[4]}\n" for r in rows))
    spec, split = builders.resolve_source(f"graded:{path}")
    ex = list(spec.readers[split](src.Problems("fail")))
    assert spec.scored and [(e["query"], e["score"]) for e in ex] == [(r[5].strip(), float(r[4])) for r in rows]
    spec, split = builders.resolve_source(f"scored:{path}")
    kept = list(spec.readers[split](src.Problems("fail")))
    assert not spec.scored and len(kept) == sum(float(r[4]) >= 4 for r in rows) > 0


def test_generic_jsonl_and_tsv_from_real_triplets(tmp_path):
    """The generic format (what hard-negative mining writes) on real SNLI triplets, both encodings."""
    ex, _ = _read("snli-triplets", "validation")
    jsonl, tsv = tmp_path / "mined.jsonl", tmp_path / "mined.tsv"
    with open(jsonl, "w") as f:
        for i, e in enumerate(ex):
            row = {"query": e["query"], "positive": e["positive"], "negatives": e["negatives"],
                   "task": "sentence similarity"}
            if i % 2:
                row |= {"title": "t", "negatives": [{"text": e["negatives"][0], "title": "nt"}]}
            f.write(json.dumps(row) + "\n")
    with open(tsv, "w") as f:
        f.write("query\tpositive\tnegatives\n")
        f.writelines(f"{e['query']}\t{e['positive']}\t{json.dumps(e['negatives'])}\n" for e in ex)
    triple = lambda e: (e["query"], e["positive"], e["negatives"])  # noqa: E731
    got = list(src.generic(jsonl, src.Problems("fail")))
    assert len(got) == 2954
    assert [triple(g) for g in got] == [triple(e) for e in ex]
    assert got[1]["title"] == "t" and got[1]["negative_titles"] == ["nt"] and got[0]["task"] == "sentence similarity"
    got = list(src.generic(tsv, src.Problems("fail")))
    assert [triple(g) for g in got] == [triple(e) for e in ex]


# ----------------------------------------------------------------------------- bad input
def _broken_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [b'{"query": "q1", "positive": "p1"}',
             b'{"query": "q2", "positive": ',                      # 2: malformed JSON
             b'{"query": "q3"}',                                   # 3: missing field
             b'{"query": "  ", "positive": "p4"}',                 # 4: empty text
             b'{"query": "q5 \xff\xfe", "positive": "p5"}',        # 5: invalid UTF-8
             b'{"query": "q6", "positive": "p6", "task": "nonsense"}',  # 6: unknown task
             b'{"query": "q7", "positive": "p7", "negatives": ["n7"]}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_input_skip_counts_and_locations(tmp_path):
    path = _broken_jsonl(tmp_path)
    problems = src.Problems("skip")
    got = list(src.generic(path, problems))
    assert [g["query"] for g in got] == ["q1", "q7"]
    assert problems.by_reason() == {"bad_value": 1, "empty_text": 1, "invalid_utf8": 1, "malformed": 1,
                                    "missing_field": 1}
    for line, words in ((2, "malformed: invalid JSON"), (3, "missing_field: no field 'positive'"),
                        (4, "empty_text: field 'query' is empty"), (5, "invalid_utf8"), (6, "task 'nonsense'")):
        assert any(m.startswith(f"{path}:{line}: ") and words in m for m in problems.first), (line, problems.first)
    assert "5 bad input(s) skipped" in problems.summary()


@pytest.mark.parametrize("line", [2, 3, 4, 5, 6])
def test_bad_input_fail_mode_names_file_and_line(tmp_path, line):
    path = _broken_jsonl(tmp_path)
    keep = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([keep[0], keep[line - 1]]) + b"\n")  # the bad line is now line 2
    with pytest.raises(src.DataError, match=f"^{path}:2: "):
        list(src.generic(path, src.Problems("fail")))


def test_beir_unknown_qrels_id_and_table_errors(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "doc one"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "query one"}\n')
    rows = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td9\t1", "q7\td1\t1", "q1\td1"]
    (tmp_path / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n")
    problems = src.Problems("skip")
    got = list(src.beir(tmp_path, "train", problems))
    assert len(got) == 1 and got[0]["title"] == "T"
    qrels = tmp_path / "qrels" / "train.tsv"
    assert problems.first == [f"{qrels}:3: unknown_id: corpus-id 'd9' is not in corpus.jsonl",
                              f"{qrels}:4: unknown_id: query-id 'q7' is not in queries.jsonl",
                              f"{qrels}:5: malformed: 2 fields, the header has 3 (query-id, corpus-id, score)"]
    with pytest.raises(src.DataError, match=f"{qrels}:3: unknown_id"):
        list(src.beir(tmp_path, "train", src.Problems("fail")))


def test_bitext_not_aligned(tmp_path):
    a, b = tmp_path / "x.deu", tmp_path / "x.eng"
    a.write_text("eins\nzwei\ndrei\n")
    b.write_text("one\n\n")
    problems = src.Problems("skip")
    assert [e["positive"] for e in src.bitext(a, b, problems)] == ["one"]
    assert problems.first == [f"{b}:2: empty_text: empty line", f"{a}:3: malformed: the files are not "
                                                                 f"line-aligned: this file is longer"]


def test_unknown_classification_label(tmp_path):
    path = tmp_path / "EN_train.tsv"
    path.write_text("sentence\tis_counterfactual\nI wish it had worked.\t1\nFine.\t0\nOdd.\tmaybe\n")
    spec_reader = builders.registry(DATA)["amazon-counterfactual-en"].readers["train"]
    problems = src.Problems("skip")
    got = list(src.classification(path, problems, **{**spec_reader.keywords}))
    assert [g["positive"] for g in got] == ["counterfactual statement", "not a counterfactual statement"]
    assert problems.first == [f"{path}:4: bad_value: is_counterfactual 'maybe' is not a known label"]


def test_parallel_pairs_tempered_by_language():
    """MAFAND-MT (9 languages, Swahili 29,996 of 64,026 pairs): the X side is the query, English
    the positive; each language's share of the rows is n^(1/T) / sum n^(1/T) (T=2), and every
    row is a real pair of its file (independent count with gzip + csv)."""
    folder = DATA / "parallel" / "mafand_mt_train"
    raw = {}
    for path in sorted(folder.glob("*-en.tsv.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        code = path.name.removesuffix("-en.tsv.gz")
        assert rows[0] == ["en", code]
        raw[code] = {(x, en) for en, x in rows[1:]}
    sizes = {code: len(pairs) for code, pairs in raw.items()}
    assert sum(sizes.values()) == 64_026 and sizes["swa"] == 29_996  # the data README
    examples, problems = _read("parallel-mafand", "train", "fail")
    got = collections.Counter(e["origin"].split("/")[1].split("-en.tsv.gz")[0] for e in examples)
    norm = sum(n ** 0.5 for n in sizes.values())
    for code, n in sizes.items():
        assert got[code] == round(64_026 * n ** 0.5 / norm)
    for e in examples[::97]:
        code = e["origin"].split("/")[1].split("-en.tsv.gz")[0]
        assert (e["query"], e["positive"]) in raw[code] and e["task"] == ""
    assert got["swa"] < sizes["swa"] and got["tsn"] > sizes["tsn"]  # the large shrinks, the small grows
    assert len(set(map(str, examples))) == sum(min(got[c], n) for c, n in sizes.items())  # no repeat before all


def test_parallel_placeholders():
    f = src._without_placeholders
    assert f("Download { $esr_version } now", "normalise") == "Download now"
    assert f("$1 edits by %s in {{PLURAL:$2|one day|$2 days}}", "normalise") == "edits by in"
    assert f("<b>Bold</b> %1$s", "normalise") == "Bold"
    assert f("{ $name }:", "normalise") is None  # nothing left but punctuation: the pair goes
    assert f("Download { $v }", "drop") is None and f("Download { $v }", "keep") == "Download { $v }"
    assert f("50% less, $ 5", "drop") == "50% less, $ 5"  # a percent sign and a dollar are text
    def pairs(mode):  # at T = 1 every language keeps its rows as they are
        return {e["origin"]: (e["query"], e["positive"]) for e in src.parallel(
            DATA / "parallel" / "mozilla_org_l10n", src.Problems("fail"), placeholders=mode, temperature=1.0)}

    keep, normalised, dropped = pairs("keep"), pairs("normalise"), pairs("drop")
    assert len(keep) == 107_445  # the data README
    changed = {o for o, p in keep.items() if normalised.get(o) != p}
    assert set(keep) - set(dropped) == changed and len(changed) > 1000  # measured: 1,140
    assert all(src.PLACEHOLDER.search(" ".join(keep[o])) and not src.PLACEHOLDER.search(" ".join(normalised[o]))
               for o in changed if o in normalised)
    with pytest.raises(ValueError, match="placeholders"):
        list(src.parallel(DATA / "parallel" / "udhr", src.Problems("fail"), placeholders="strip"))
