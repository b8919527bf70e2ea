"""Reports over evaluation results: family means, the plain-text table the commands print, and the
score differences of two runs (`python -m gemini_embed.eval.report BEFORE.json AFTER.json`)."""
from __future__ import annotations

import numpy as np

from gemini_embed.eval import tasks as tasks_lib


def family_means(results: dict[str, dict]) -> dict[str, float]:
    """Mean main score of each family ("STS17", "Tatoeba", ...) whose members were all run."""
    out = {}
    for family, members in tasks_lib.FAMILIES.items():
        suffixes = {k[len(m):] for k in results for m in members if k == m or k.startswith(m + "@")}
        for suffix in sorted(suffixes):
            keys = [m + suffix for m in members]
            if all(k in results for k in keys):
                out[family + suffix] = float(np.mean([results[k]["main_score"] for k in keys]))
    return out


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: task, metric, main score, samples, seconds (then family means)."""
    width = max([len(k) for k in results] + [4])
    lines = [f"{'task':<{width}}  {'metric':<16} {'score':>7} {'n':>7} {'sec':>7}"]
    for key, r in results.items():
        lines.append(f"{key:<{width}}  {r['metric']:<16} {r['main_score']:>7.4f} {r['num_samples']:>7} "
                     f"{r['seconds']:>7.1f}")
    for family, score in family_means(results).items():
        lines.append(f"{family + ' (mean)':<{width}}  {'':<16} {score:>7.4f}")
    return "\n".join(lines)


def score_differences(before: dict[str, dict], after: dict[str, dict]) -> dict[str, tuple[float, str]]:
    """Per task of either run: (largest |after - before| over all its scores, that score's name).
    A task or a score missing from one side counts as an infinite difference."""
    out = {}
    for task in sorted(set(before) | set(after)):
        a, b = before.get(task, {}).get("scores"), after.get(task, {}).get("scores")
        if a is None or b is None:
            out[task] = (float("inf"), "task missing")
            continue
        worst = (0.0, "")
        for name in sorted(set(a) | set(b)):
            d = abs(b[name] - a[name]) if name in a and name in b else float("inf")
            worst = max(worst, (d, name))
        out[task] = worst
    return out


def main(argv=None) -> int:
    """python -m gemini_embed.eval.report BEFORE.json AFTER.json [--tolerance 1e-6]: every score of
    two evaluate runs compared; exits 1 when any differs by more than the tolerance."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__.split(":", 1)[1].strip())
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args(argv)
    runs = [json.loads(open(f).read())["tasks"] for f in (args.before, args.after)]
    diffs = score_differences(*runs)
    over = {t: d for t, d in diffs.items() if not d[0] <= args.tolerance}
    n_scores = sum(len(r["scores"]) for r in runs[0].values())
    worst = max(diffs.items(), key=lambda kv: kv[1][0]) if diffs else ("-", (0.0, "-"))
    print(f"{len(diffs)} tasks, {n_scores} scores; largest difference {worst[1][0]:.3g} "
          f"({worst[0]}: {worst[1][1] or '-'}); over {args.tolerance:g}: {len(over)}")
    for task, (d, name) in over.items():
        print(f"  {task}: {name} differs by {d:.3g}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
