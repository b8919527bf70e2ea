"""Model soups: average the params of several trained models (workdirs or exports) into one.

    python -m gemini_embed.soup --inputs runs/a,runs/b,runs/c --method uniform --output runs/soup
    python -m gemini_embed.soup --inputs runs/a,runs/b,runs/c --method greedy --dev STSBenchmark \
        --output runs/soup_greedy

uniform: the mean of every ingredient's params (EmbeddingGemma's soup of runs with different
mixtures). greedy (Wortsman et al. 2022): ingredients sorted by dev score, best first; each next
one is added only if the dev score of the soup with it beats the soup without it, so the soup is
never below its best ingredient on dev. Selection uses dev tasks only (`eval/tasks.py: DEV_TASKS`:
`--dev STSBenchmark` scores the STS Benchmark dev split), never a test split.

The output is an export (`params/` + `config.json`) with a `provenance.json` naming the
ingredients, the ones kept and their dev scores; `Embedder.from_pretrained(OUTPUT)` and the
evaluate command load it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gemini_embed import runtime


@dataclasses.dataclass(frozen=True)
class Ingredient:
    path: str
    params: Any  # {"params": {...}} host numpy arrays: what EmbeddingModel.apply takes
    spec: dict  # the model spec (pretrained.Pretrained.spec())
    provenance: dict | None


def load_ingredient(path) -> Ingredient:
    from gemini_embed.train import provenance
    from gemini_embed.train.export import load_params

    params, config = load_params(path)
    if "model" not in config:
        raise ValueError(f"{path}: its config has no model spec (keys: {sorted(config)}); not a model of ours")
    return Ingredient(str(path), params.get("model", params), config["model"], provenance.read(path))


def check_compatible(a: Ingredient, b: Ingredient) -> None:
    """Raises ValueError naming both ingredients when their param trees differ in shape."""
    leaves_a = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(a.params)}
    leaves_b = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(b.params)}
    if leaves_a.keys() != leaves_b.keys():
        only = sorted(leaves_a.keys() ^ leaves_b.keys())[:4]
        raise ValueError(f"cannot soup {a.path} and {b.path}: their params differ in structure ({only} in one only)")
    for key, x in leaves_a.items():
        y = leaves_b[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"cannot soup {a.path} and {b.path}: {key} is {x.dtype}{list(x.shape)} in the first "
                             f"and {y.dtype}{list(y.shape)} in the second")


def average(trees: Sequence[Any]) -> Any:
    """The leafwise mean of equally shaped param trees (accumulated in float64, stored as the input dtype)."""
    def mean(*xs):
        acc = np.zeros(xs[0].shape, np.float64)
        for x in xs:
            acc += np.asarray(x, np.float64)
        return (acc / len(xs)).astype(xs[0].dtype)

    return jax.tree.map(mean, *trees)


def greedy(ingredients: Sequence[Ingredient], score: Callable[[Any], float],
           log: Callable[[str], None] = print) -> tuple[list[int], float, list[dict]]:
    """Greedy soup: (indices kept, dev score of the soup, one record per decision)."""
    scores = [score(x.params) for x in ingredients]
    order = sorted(range(len(ingredients)), key=lambda i: -scores[i])
    kept, best = [order[0]], scores[order[0]]
    history = [{"path": ingredients[i].path, "dev": scores[i]} for i in range(len(ingredients))]
    log(f"greedy: start from {ingredients[order[0]].path} (dev {best:.4f})")
    for i in order[1:]:
        trial = score(average([ingredients[j].params for j in kept + [i]]))
        take = trial > best
        history.append({"add": ingredients[i].path, "soup_dev": trial, "kept": take})
        log(f"greedy: + {ingredients[i].path} -> dev {trial:.4f} ({'kept' if take else 'dropped'}; best {best:.4f})")
        if take:
            kept, best = kept + [i], trial
    return kept, best, history


def dev_scorer(spec: dict, tasks: str, *, data_root=None, batch_size: int = 64) -> Callable[[Any], float]:
    """params -> mean main score over the dev tasks (`STSBenchmark` means `STSBenchmark:dev`)."""
    from gemini_embed.embed import Embedder
    from gemini_embed.eval import runner
    from gemini_embed.eval.tasks import DEV_TASKS, REGISTRY
    from gemini_embed.pretrained import from_spec

    names = []
    for name in [t.strip() for t in tasks.split(",") if t.strip()]:
        dev = DEV_TASKS.get(name, name if name.endswith(":dev") and name in REGISTRY else None)
        if dev is None:
            raise ValueError(f"--dev {name!r}: no dev split for it; dev tasks: {', '.join(DEV_TASKS)}")
        names.append(dev)
    template = from_spec(spec, None)
    model = None

    def score(params) -> float:
        nonlocal model
        if model is None:
            model = Embedder(template.config, params, template.tokenizer, max_length=template.max_length,
                             uses_prompts=template.uses_prompts, name="soup")
        else:  # same shapes: swap the params, keep the compiled embed function
            model.params = jax.device_put(params, jax.tree.map(lambda x: x.sharding, model.params))
        results = runner.evaluate(lambda t, task=None, titles=None: model.embed(t, task=task, titles=titles,
                                                                                 batch_size=batch_size),
                                  names, data_root=data_root, use_prompts=template.uses_prompts, progress=False)
        return float(np.mean([r["main_score"] for r in results.values()]))

    return score


def make_soup(inputs: Sequence[str], method: str, output, *, dev: str = "", data_root=None, batch_size: int = 64,
              overwrite: bool = False) -> dict:
    """Builds the soup of `inputs` and writes it to `output`; returns its provenance record."""
    from gemini_embed.train import provenance
    from gemini_embed.train.export import export_params

    if method not in ("uniform", "greedy"):
        raise ValueError(f"--method must be uniform or greedy, got {method!r}")
    if method == "greedy" and not dev:
        raise ValueError("--method greedy needs --dev TASKS (dev splits only)")
    if not inputs:
        raise ValueError("--inputs: no ingredients")
    ingredients = []
    for path in inputs:
        ingredients.append(load_ingredient(path))
        check_compatible(ingredients[0], ingredients[-1])
    score = dev_scorer(ingredients[0].spec, dev, data_root=data_root, batch_size=batch_size) if dev else None
    if method == "greedy":
        kept, dev_score, history = greedy(ingredients, score)
    else:
        kept, history = list(range(len(ingredients))), []
    params = average([ingredients[i].params for i in kept])
    if method == "uniform" and score is not None:
        dev_score = score(params)
        print(f"uniform soup of {len(kept)}: dev {dev_score:.4f}")
    record = {"soup": {"method": method, "inputs": list(inputs), "kept": [ingredients[i].path for i in kept],
                       "dev_tasks": dev or None, "dev": dev_score if dev else None, "history": history},
              "parents": [x.provenance for x in ingredients], "model": ingredients[0].spec.get("name")}
    out = pathlib.Path(output)
    export_params(params, out, {"model": ingredients[0].spec, "soup": record["soup"]}, overwrite=overwrite)
    provenance.write(out, record)
    return record


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--inputs", required=True, help="comma-separated workdirs or exports (the ingredients)")
    ap.add_argument("--method", choices=("uniform", "greedy"), default="uniform", help="default: %(default)s")
    ap.add_argument("--dev", default="", help="dev tasks for greedy selection (and a score for uniform), e.g. "
                                              "STSBenchmark; dev splits only (default: none)")
    ap.add_argument("--output", required=True, help="the soup's export folder")
    ap.add_argument("--data", default=None, help="benchmark data root (default $GEMINI_EMBED_DATA or ../shared/data)")
    ap.add_argument("--batch_size", type=int, default=64, help="embedding batch for dev scoring (default: 64)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing export at --output")
    args = ap.parse_args(argv)
    runtime.setup_command()
    inputs = [p.strip() for p in args.inputs.split(",") if p.strip()]
    try:
        record = make_soup(inputs, args.method, args.output, dev=args.dev, data_root=args.data,
                           batch_size=args.batch_size, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(record["soup"], indent=1, default=float))
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
