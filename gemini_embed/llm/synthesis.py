"""The LLM as a data writer: synthetic queries for passages and paraphrases of sentences.

Gemma 3 270M is a base model, so each kind is a few-shot prompt: a few (input, output) examples
from a *training* split, then the new input and the output's label. The examples come from
SQuAD v1.1 train (query: paragraph -> question) and MRPC train paraphrases (paraphrase), never
from an evaluation split. Every row written is a training pair in the generic format
(`query`, `positive`, `title`, `task`) with its provenance. Writing is resumable: rows are
appended as batches finish, and a restart skips the items already written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
from typing import Iterator, Sequence

from gemini_embed.data import sources as src
from gemini_embed.data.files import Problems, read_jsonl, read_lines, text_field


@dataclasses.dataclass(frozen=True)
class Template:
    id: str
    kind: str
    example: str  # one shot: "{input}" and "{output}"
    task: str  # the query task of the pairs (their query prompt in training)
    stop: tuple[str, ...] = ("\n",)


TEMPLATES = {t.kind: t for t in (
    Template("query-v1", "query", "Passage: {input}\nQuestion: {output}\n\n", "question answering"),
    Template("paraphrase-v1", "paraphrase", "Sentence: {input}\nParaphrase: {output}\n\n", "sentence similarity"),
)}
KINDS = tuple(TEMPLATES)
MAX_INPUT_WORDS = 120  # passages are cut to this many words, in the examples and the new input


def _cut(text: str, words: int = MAX_INPUT_WORDS) -> str:
    w = text.split()
    return " ".join(w[:words]) + (" ..." if len(w) > words else "")


def few_shot_examples(kind: str, data_root, n: int = 256, seed: int = 0) -> list[tuple[str, str]]:
    """A pool of n (input, output) examples of `kind` from a training split, drawn with `seed`.
    Each prompt takes its shots from the pool with its own seed: a small base model copies the
    last example's output into many answers when every prompt shows the same examples."""
    root, problems = pathlib.Path(data_root), Problems()
    if kind == "query":
        rows = [(_cut(e["positive"], 60), e["query"]) for e in
                src.squad(root / "squad_v1.1_train" / "squad_v1.1_train.jsonl.gz", problems)]
    elif kind == "paraphrase":
        rows = [(e["query"], e["positive"]) for e in
                src.pairs_table(root / "mrpc" / "train.tsv", problems, first="sentence1", second="sentence2",
                                score="label", threshold=1.0)]
    else:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return random.Random(seed).sample(rows, n)


def prompt(template: Template, examples: Sequence[tuple[str, str]], text: str) -> str:
    shots = "".join(template.example.format(input=i, output=o) for i, o in examples)
    # No trailing space: SentencePiece joins it to the next word (" What"), so a prompt that ends in
    # a bare space asks the model for an unusual token and it writes digits and markup instead.
    return shots + template.example.split("{output}")[0].format(input=_cut(text)).rstrip(" ")


def read_corpus(spec: str, problems: Problems) -> Iterator[tuple[str, str, str]]:
    """(id, title, text) of each item of FORMAT:PATH: beir:DIR (its corpus.jsonl[.gz]), squad:FILE
    (each distinct paragraph, its article title), jsonl:FILE (`text`, optional `title`, `_id` or
    `id`; default the line number) or lines:FILE (one text per line)."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in ("beir", "squad", "jsonl", "lines"):
        raise ValueError(f"--corpus {spec!r} is not FORMAT:PATH with FORMAT beir, squad, jsonl or lines")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--corpus {spec!r}: {path} does not exist")
    if fmt == "lines":
        for line, text in read_lines(path, problems):
            if text.strip():
                yield str(line), "", text.strip()
        return
    if fmt == "squad":
        seen = set()
        for line, obj in read_jsonl(path, problems):
            title, text = obj.get("title", "").replace("_", " "), obj.get("context", "")
            if text and text not in seen:
                seen.add(text)
                yield str(line), title, text
        return
    if fmt == "beir":
        path = next((p for p in (path / "corpus.jsonl", path / "corpus.jsonl.gz") if p.exists()), path / "corpus.jsonl")
    for line, obj in read_jsonl(path, problems):
        text = text_field(obj, "text", path, line, problems)
        title = text_field(obj, "title", path, line, problems, optional=True)
        if text is not None and title is not None and text.strip():
            yield str(obj.get("_id", obj.get("id", line))), title, text.strip()


def row_seed(seed: int, item_id: str) -> int:
    """A per-item seed (31 bits): the same item gets the same sample whatever its batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _done_ids(output: pathlib.Path, settings: dict) -> set[str]:
    """Ids already written to OUTPUT; a cut-off last line (a killed run) is dropped from the file."""
    if not output.exists():
        return set()
    lines = output.read_text(encoding="utf-8").split("\n")
    keep, done = [], set()
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the last line, cut off mid-write
                break
            raise ValueError(f"{output}:{i + 1}: not a JSON row; use another --output or --overwrite") from None
        was = {k: v for k, v in row["provenance"].items() if k not in ("seed", "shots_from_pool")}
        if was != settings:
            diff = sorted(k for k in set(was) | set(settings) if was.get(k) != settings.get(k))
            raise ValueError(f"{output} was written with other settings ({', '.join(diff)}); use another --output "
                             f"or --overwrite")
        keep.append(ln)
        done.add(row["source_id"])
    output.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    return done


def synthesize(generator, items: Sequence[tuple[str, str, str]], kind: str, output, *, examples,
               shots: int = 3, max_new_tokens: int = 48, temperature: float = 0.7, top_p: float = 0.95,
               seed: int = 0, chunk: int | None = None, progress: bool = True) -> dict:
    """One generated `kind` per (id, title, text) item, appended to OUTPUT (JSONL) chunk by chunk;
    each prompt shows `shots` examples of the pool `examples`, drawn with the item's seed.
    Returns counts: written now, skipped (done before), empty (nothing generated, not written),
    copied (an output equal to one of its prompt's examples, not written)."""
    from tqdm import tqdm

    template = TEMPLATES[kind]
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = {"generator": generator.name, "sampler": generator.sampler, "template": template.id, "shots": shots,
                "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                "examples": hashlib.sha256(json.dumps(list(examples)).encode()).hexdigest()[:16]}
    done = _done_ids(output, settings)
    todo = [it for it in items if it[0] not in done]
    chunk = chunk or generator.batch_size
    counts = {"written": 0, "skipped": len(items) - len(todo), "empty": 0, "copied": 0}
    bar = tqdm(total=len(todo), desc=f"synth {kind}", unit="item", disable=not progress)
    with output.open("a", encoding="utf-8") as f:
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            seeds = [row_seed(seed, i) for i, _, _ in part]
            picks = [random.Random(rs).sample(range(len(examples)), shots) for rs in seeds]
            prompts = [prompt(template, [examples[j] for j in pick], text) for (_, _, text), pick in zip(part, picks)]
            outs = generator.generate(prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seeds,
                                      stop=template.stop)
            for (item_id, title, text), out, rs, pick in zip(part, outs, seeds, picks):
                out = out.strip()
                if not out or out in {examples[j][1] for j in pick}:
                    counts["empty" if not out else "copied"] += 1
                    continue
                pair = ({"query": out, "positive": text, "title": title} if kind == "query"
                        else {"query": text, "positive": out, "title": ""})
                f.write(json.dumps({**pair, "task": template.task, "source_id": item_id,
                                    "provenance": {**settings, "seed": rs, "shots_from_pool": pick}},
                                   ensure_ascii=False) + "\n")
                counts["written"] += 1
            f.flush()
            bar.update(len(part))
    bar.close()
    return counts


def human_counterpart(output, squad_path, counterpart) -> int:
    """The control arm of a synthetic-query file over SQuAD paragraphs: the same paragraphs with
    one of SQuAD's human questions each (drawn with the row's seed), written to `counterpart` in
    the same format. Returns the number of rows."""
    questions: dict[str, list[str]] = {}
    for e in src.squad(squad_path, Problems()):
        questions.setdefault(e["positive"], []).append(e["query"])
    rows = [json.loads(ln) for ln in pathlib.Path(output).read_text(encoding="utf-8").splitlines() if ln.strip()]
    out = []
    for r in rows:
        human = questions.get(r["positive"])
        if human is None:
            raise ValueError(f"{output}: the passage of source_id {r['source_id']} is not a SQuAD paragraph")
        q = random.Random(r["provenance"]["seed"]).choice(human)
        out.append({**r, "query": q, "provenance": {"human_counterpart_of": str(output), "squad": str(squad_path)}})
    pathlib.Path(counterpart).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    return len(out)
