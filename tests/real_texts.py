"""Real texts from the shared benchmark data, for parity tests (varied: short, long, multilingual, code)."""
import csv
import glob
import gzip
import json
import os

DATA = os.environ["GEMINI_EMBED_DATA"]


def sts_sentences(n: int, split: str = "test") -> list[str]:
    out = []
    with open(f"{DATA}/sts/stsbenchmark/sts-{split}.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out += [row[5], row[6]]
            if len(out) >= n:
                break
    return out[:n]


def scifact_docs(n: int) -> list[str]:
    out = []
    with gzip.open(f"{DATA}/scifact/corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append((d["title"] + " " + d["text"]).strip())
            if len(out) >= n:
                break
    return out


def multilingual(n: int) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{DATA}/tatoeba/tatoeba.*-eng.*")):
        if path.endswith(".eng"):
            continue
        with open(path, encoding="utf-8", errors="strict") as f:
            line = f.readline().strip()
        if line:
            out.append(line)
        if len(out) >= n:
            break
    return out


def code(n: int) -> list[str]:
    with open(f"{DATA}/cosqa_dev/corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def mixed(n_sts=25, n_docs=8, n_multi=10, n_code=5) -> list[str]:
    """~50 varied texts, the last one longer than 1,000 tokens."""
    docs = scifact_docs(n_docs + 6)
    return (sts_sentences(n_sts) + docs[:n_docs] + multilingual(n_multi) + code(n_code)
            + ["🙂 emoji 😀 text", "multiple   spaces\tand\ttabs\n\nnewlines", "", " ".join(docs[n_docs:])])
