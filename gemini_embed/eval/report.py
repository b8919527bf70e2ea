"""Reports over evaluation results: family means and the plain-text table the commands print."""
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
