"""The multilingual stage's report (docs/multilingual.md): Tatoeba F1 per language before and after,
sorted, and F1 against the parallel training pairs of each language.

    python experiments/multilingual_report.py --before runs/ml/eval/before.json \
        --after runs/ml/eval/after.json --output docs/multilingual_tatoeba.png

Each JSON is the evaluate command's output with the Tatoeba family (`--tasks Tatoeba,...`). Prints
a markdown table (mean F1 over the 112 languages, the priority languages, other tasks of both
files) and writes the two-panel plot.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from gemini_embed.data import builders, languages

PRIORITY = ("mkd", "sqi", "bul", "srp", "swh", "amh", "deu", "cmn")


def tatoeba_f1(path) -> dict[str, float]:
    """Tatoeba language -> F1 from an evaluate output; every one of the 112 must be there."""
    tasks = json.loads(pathlib.Path(path).read_text())["tasks"]
    f1 = {name.split(":")[1].split("-")[0]: t["main_score"] for name, t in tasks.items()
          if name.startswith("Tatoeba:")}
    missing = sorted(set(languages.TATOEBA_ALIASES) - set(f1))
    if missing:
        raise ValueError(f"{path}: no Tatoeba score for {len(missing)} languages ({', '.join(missing[:8])} ...): "
                         "evaluate with --tasks Tatoeba")
    return f1


def other_scores(path) -> dict[str, float]:
    tasks = json.loads(pathlib.Path(path).read_text())["tasks"]
    return {name: t["main_score"] for name, t in tasks.items() if not name.startswith("Tatoeba:")}


def table(before: dict[str, float], after: dict[str, float], pairs: dict[str, int],
          others: tuple[dict[str, float], dict[str, float]]) -> str:
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    lines = ["| | before | after | training pairs |", "|---|---|---|---|",
             f"| **Tatoeba mean F1 (112 languages)** | {mean(before):.4f} | **{mean(after):.4f}** | |"]
    lines += [f"| Tatoeba {lang}-eng | {before[lang]:.4f} | {after[lang]:.4f} | {pairs.get(lang, 0):,} |"
              for lang in PRIORITY]
    for name in sorted(set(others[0]) | set(others[1])):
        b, a = others[0].get(name), others[1].get(name)
        lines.append(f"| {name} | {'-' if b is None else f'{b:.4f}'} | {'-' if a is None else f'{a:.4f}'} | |")
    return "\n".join(lines)


def plot(before: dict[str, float], after: dict[str, float], pairs: dict[str, int], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(after, key=after.get, reverse=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(18, 9))
    x = range(len(order))
    ax1.bar(x, [after[k] for k in order], color="tab:blue", label="after")
    ax1.plot(x, [before[k] for k in order], "k.", label="before")
    ax1.set_xticks(list(x), order, rotation=90, fontsize=7)
    ax1.set_ylabel("Tatoeba F1")
    ax1.set_title("Tatoeba F1 by language (sorted by the score after)")
    ax1.legend()
    ax2.scatter([max(pairs.get(k, 0), 1) for k in order], [after[k] - before[k] for k in order], s=12)
    for k in order:
        ax2.annotate(k, (max(pairs.get(k, 0), 1), after[k] - before[k]), fontsize=6)
    ax2.set_xscale("log")
    ax2.set_xlabel("parallel training pairs of the language (raw, all datasets; 1 = none)")
    ax2.set_ylabel("F1 gain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--output", required=True, help="the plot (PNG)")
    ap.add_argument("--data", default=None, help="the shared data folder (default $GEMINI_EMBED_DATA)")
    args = ap.parse_args(argv)
    pairs = {lang: sum(per.values()) for lang, per in
             languages.pairs_per_tatoeba_language(builders.data_root(args.data) / "parallel").items()}
    before, after = tatoeba_f1(args.before), tatoeba_f1(args.after)
    print(table(before, after, pairs, (other_scores(args.before), other_scores(args.after))))
    plot(before, after, pairs, pathlib.Path(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
