"""The recipe driver: stages -> soups -> one evaluation per row -> the ablation table and curves.

    python -m gemini_embed.recipe --recipe experiments/gemma3_270m_recipe.py --workdir runs/recipe

The recipe file is a config file (`get_config(stage)`) that also names STAGES ({stage: the stage
it starts from, or None}), SOUPS ({name: (method, ingredients, dev tasks)}), RAW (the untrained
model), REFERENCES (other models for the table), EVAL_TASKS and EVAL_ARGS (more evaluate flags). Every step is a subprocess
running the project's own command (train, soup, evaluate), printed and logged to
WORKDIR/commands.log, and skipped when its output is complete: a killed driver picks up where it
stopped (a stage resumes from its last checkpoint, exactly). Writes WORKDIR/recipe.md (the table,
with the CPU time of each step) and WORKDIR/curves.png (loss and in-batch accuracy per source).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import time

import numpy as np

from gemini_embed import runtime


def load_recipe(path):
    spec = importlib.util.spec_from_file_location("recipe_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("STAGES", "SOUPS", "RAW", "EVAL_TASKS", "get_config"):
        if not hasattr(module, name):
            raise ValueError(f"{path}: a recipe file needs {name}")
    for stage, parent in module.STAGES.items():
        if parent is not None and parent not in module.STAGES:
            raise ValueError(f"{path}: stage {stage!r} starts from unknown stage {parent!r}")
    return module


def _run(cmd: list[str], workdir: pathlib.Path, what: str, times: dict) -> None:
    """Runs one step, adding its wall and CPU seconds (children's user + system) to `times`."""
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"\n== {what}: {line}", flush=True)
    with open(workdir / "commands.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what}: {line}\n")
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    rc = subprocess.run(cmd).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    entry = times.setdefault(what, {"wall_s": 0.0, "cpu_s": 0.0, "runs": 0})
    entry["wall_s"] += time.perf_counter() - t0
    entry["cpu_s"] += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    entry["runs"] += 1
    (workdir / "times.json").write_text(json.dumps(times, indent=1))
    if rc:
        raise SystemExit(f"error: {what} failed (exit {rc}); rerun the driver to resume: {line}")


def _finished(stage_dir: pathlib.Path, steps: int) -> bool:
    return (stage_dir / "checkpoints" / str(steps)).is_dir()


def _evaluated(out: pathlib.Path) -> bool:
    """The evaluate command writes its output after every task: done once it says complete."""
    return out.exists() and json.loads(out.read_text()).get("complete", True)


TRAINING_BLOCKS = ("data", "train", "optim", "loss")  # config blocks that change what a stage learns


def changed_config(stage_dir: pathlib.Path, config) -> list[str]:
    """The config keys (block.key) that differ from those `stage_dir` was started with (its
    provenance.json); [] for a new stage. Resuming a stage under another config would mix two runs."""
    path = stage_dir / "provenance.json"
    if not path.exists():
        return []
    before = json.loads(path.read_text())["config"]
    now = json.loads(json.dumps(config.to_dict(), default=str))
    # A key that one side lacks (added to the configs since) counts as unchanged at its default.
    from gemini_embed.train.state import LossConfig, OptimConfig

    defaults = {block: json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(cls)}))
                for block, cls in (("optim", OptimConfig), ("loss", LossConfig))}
    missing = object()
    changed = []
    for block in TRAINING_BLOCKS:
        old, new, default = before.get(block, {}), now.get(block, {}), defaults.get(block, {})
        for k in sorted(set(old) | set(new)):
            a, b = old.get(k, default.get(k, missing)), new.get(k, default.get(k, missing))
            if a is missing or b is missing or a != b:
                changed.append(f"{block}.{k}")
    return changed


def run(recipe_path: str, workdir: str, *, only_tables: bool = False) -> pathlib.Path:
    r = load_recipe(recipe_path)
    w = pathlib.Path(workdir).resolve()
    w.mkdir(parents=True, exist_ok=True)
    times = json.loads((w / "times.json").read_text()) if (w / "times.json").exists() else {}
    py = sys.executable
    rows: dict[str, str] = {"raw": f"{r.RAW}"}
    for stage, parent in r.STAGES.items():
        config = r.get_config(stage)
        changed = changed_config(w / stage, config)
        if changed and not only_tables:
            raise SystemExit(f"error: {w / stage} was started with another config ({', '.join(changed)} differ "
                             f"from {recipe_path}); use a new --workdir, or delete that stage to retrain it")
        steps = config.train.steps
        cmd = [py, "-m", "gemini_embed.main", "--config", f"{recipe_path}:{stage}", "--workdir", str(w / stage)]
        if parent:
            cmd.append(f"--config.model.init_from={w / parent}")
        if not only_tables and not _finished(w / stage, steps):
            _run(cmd, w, stage, times)
        rows[stage] = str(w / stage)
    for name, (method, ingredients, dev) in r.SOUPS.items():
        out = w / name
        cmd = [py, "-m", "gemini_embed.soup", "--inputs", ",".join(str(w / i) for i in ingredients), "--method",
               method, "--output", str(out), "--overwrite"] + (["--dev", dev] if dev else [])
        if not only_tables and not (out / "provenance.json").exists():
            _run(cmd, w, name, times)
        rows[name] = str(out)
    for ref in getattr(r, "REFERENCES", ()):
        rows[ref] = ref
    for row, model in rows.items():
        out = w / "eval" / f"{row}.json"
        cmd = [py, "-m", "gemini_embed.evaluate", "--model", model, "--tasks", r.EVAL_TASKS, "--output", str(out)]
        cmd += list(getattr(r, "EVAL_ARGS", ()))
        if row == "raw":
            cmd.append("--no_projection")  # the untrained random projection only adds noise
        if not only_tables and not _evaluated(out):
            _run(cmd, w, f"eval {row}", times)
    table = ablation_table(w, rows, times)
    (w / "recipe.md").write_text(table)
    plot_curves(w, list(r.STAGES), w / "curves.png")
    print(table)
    return w / "recipe.md"


def ablation_table(w: pathlib.Path, rows: dict[str, str], times: dict) -> str:
    results = {row: json.loads((w / "eval" / f"{row}.json").read_text())["tasks"]
               for row in rows if (w / "eval" / f"{row}.json").exists()}
    tasks = list(next(iter(results.values()))) if results else []
    lines = ["| model | " + " | ".join(tasks) + " | mean | train/soup CPU s (wall s) |",
             "|---|" + "---|" * (len(tasks) + 2)]
    for row, res in results.items():
        scores = [res[t]["main_score"] for t in tasks]
        t = times.get(row)
        cost = f"{t['cpu_s']:.0f} ({t['wall_s']:.0f})" if t else "-"
        lines.append(f"| {row} | " + " | ".join(f"{s:.4f}" for s in scores) + f" | {np.mean(scores):.4f} | {cost} |")
    total_cpu = sum(t["cpu_s"] for t in times.values())
    total_wall = sum(t["wall_s"] for t in times.values())
    lines += ["", f"All steps, evaluations included: {total_cpu / 3600:.2f} CPU-hours, {total_wall / 3600:.2f} h wall."]
    return "\n".join(lines) + "\n"


def plot_curves(w: pathlib.Path, stages: list[str], path: pathlib.Path) -> None:
    """Loss and in-batch accuracy against step, one panel pair per stage, one line per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in stages if (w / s / "metrics.jsonl").exists()]
    if not stages:
        return
    fig, axes = plt.subplots(2, len(stages), figsize=(4.5 * len(stages), 6), squeeze=False)
    for col, stage in enumerate(stages):
        rows = [json.loads(ln) for ln in (w / stage / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        for source in sorted({x["source"] for x in rows}):
            pts = [x for x in rows if x["source"] == source]
            for ax, key in zip(axes[:, col], ("loss", "in_batch_accuracy")):
                ax.plot([x["step"] for x in pts], [x[key] for x in pts], marker=".", label=source)
        axes[0, col].set(title=stage, ylabel="loss")
        axes[1, col].set(xlabel="step", ylabel="in-batch accuracy")
        axes[0, col].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--recipe", required=True, help="the recipe file, e.g. experiments/gemma3_270m_recipe.py")
    ap.add_argument("--workdir", required=True, help="one folder per stage, soup and evaluation go here")
    ap.add_argument("--tables_only", action="store_true", help="run nothing; rebuild recipe.md and curves.png")
    args = ap.parse_args(argv)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # quiet libtpu in the subprocesses
    run(args.recipe, args.workdir, only_tables=args.tables_only)


if __name__ == "__main__":
    main()
