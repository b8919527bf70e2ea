"""Every score of two evaluate runs compared: the before/after check of a change that must not
move any number.

    python -m gemini_embed.eval.compare BEFORE.json AFTER.json [--tolerance 1e-6]

Exits 1 when a task or a score is missing on one side or differs by more than the tolerance.
"""
from __future__ import annotations

import argparse
import json


def _difference(a, b) -> float:
    """|a - b| of two scores: numbers, or lists and dicts of them (the largest over their leaves);
    inf where their structure or a non-numeric leaf differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((_difference(x, y) for x, y in zip(a, b)), default=0.0)
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return 0.0 if a == b else abs(float(a) - float(b))  # equal infinities or nans differ by nothing
    return 0.0 if a == b else float("inf")


def score_differences(before: dict[str, dict], after: dict[str, dict]) -> dict[str, tuple[float, str]]:
    """Per task of either run: (largest difference over all its scores, that score's name)."""
    out = {}
    for task in sorted(set(before) | set(after)):
        a, b = before.get(task, {}).get("scores"), after.get(task, {}).get("scores")
        if a is None or b is None:
            out[task] = (float("inf"), "task missing")
            continue
        worst = (0.0, "")
        for name in sorted(set(a) | set(b)):
            d = _difference(a[name], b[name]) if name in a and name in b else float("inf")
            worst = max(worst, (d, name))
        out[task] = worst
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args(argv)
    runs = [json.loads(open(f, encoding="utf-8").read())["tasks"] for f in (args.before, args.after)]
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
