"""Model soups against NumPy, greedy selection on dev, refusals, and stages (init_from + provenance).

Ingredients are tiny Gemma-architecture models with the real tokenizer, exported as our models
are; dev scores are real STS Benchmark dev-split evaluations.
"""
import pathlib

import jax
import numpy as np
import pytest

import gemini_embed as ge
from gemini_embed import soup
from gemini_embed.pretrained import resolve
from gemini_embed.train import provenance
from gemini_embed.train.export import export_params, load_params

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _export(path, seed: int, noise: float = 0.0, **overrides) -> pathlib.Path:
    p = resolve("gemma3-tiny", seed=seed, **overrides)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: np.asarray(x) + noise * rng.standard_normal(x.shape).astype(x.dtype), p.params)
    export_params(params, path, {"model": p.spec()})
    return pathlib.Path(path)


def _leaves(path):
    params, _ = load_params(path)
    return jax.tree.leaves(params.get("model", params))


def test_soup_of_one_equals_it(tmp_path):
    a = _export(tmp_path / "a", 0, 0.1)
    soup.make_soup([str(a)], "uniform", tmp_path / "soup")
    for x, y in zip(_leaves(a), _leaves(tmp_path / "soup"), strict=True):
        np.testing.assert_array_equal(x, y)
    texts = ["a man plays a guitar", "the cat sleeps"]
    np.testing.assert_array_equal(ge.Embedder.from_pretrained(str(a)).embed(texts),
                                  ge.Embedder.from_pretrained(str(tmp_path / "soup")).embed(texts))


def test_uniform_soup_of_two_is_the_numpy_mean(tmp_path):
    a, b = _export(tmp_path / "a", 0, 0.1), _export(tmp_path / "b", 1, 0.1)
    soup.make_soup([str(a), str(b)], "uniform", tmp_path / "soup")
    for x, y, s in zip(_leaves(a), _leaves(b), _leaves(tmp_path / "soup"), strict=True):
        expected = np.mean(np.stack([x, y]).astype(np.float64), axis=0).astype(x.dtype)
        np.testing.assert_array_equal(s, expected)
    assert not np.array_equal(_leaves(a)[0], _leaves(b)[0])  # the ingredients really differ
    rec = provenance.read(tmp_path / "soup")
    assert rec["soup"]["kept"] == [str(a), str(b)] and rec["soup"]["method"] == "uniform"


@pytest.mark.parametrize("seed", range(5))
def test_greedy_is_never_below_its_best_ingredient(seed):
    """A score with several optima (so that averaging can hurt): the kept soup's score is the max."""
    rng = np.random.default_rng(seed)
    ingredients = [soup.Ingredient(f"m{i}", {"w": rng.standard_normal(4)}, {}, None) for i in range(5)]
    targets = rng.standard_normal((2, 4))
    score = lambda p: float(-min(np.sum((p["w"] - t) ** 2) for t in targets))  # noqa: E731
    kept, best, history = soup.greedy(ingredients, score, log=lambda _: None)
    singles = [score(x.params) for x in ingredients]
    assert best >= max(singles)
    assert best == pytest.approx(score(soup.average([ingredients[i].params for i in kept])))
    assert len(history) == 5 + 4


@pytest.mark.slow
def test_greedy_soup_command_on_the_dev_split(tmp_path, capsys):
    paths = [_export(tmp_path / f"m{i}", i, 0.05) for i in range(3)]
    rec = soup.main(["--inputs", ",".join(map(str, paths)), "--method", "greedy", "--dev", "STSBenchmark",
                     "--output", str(tmp_path / "soup")])["soup"]
    singles = [h["dev"] for h in rec["history"][:3]]
    assert rec["dev"] >= max(singles) and rec["dev_tasks"] == "STSBenchmark"
    assert rec["kept"][0] == str(paths[int(np.argmax(singles))])
    # the dev score is the STS Benchmark dev split's, recomputed independently here
    from gemini_embed.eval import runner
    model = ge.Embedder.from_pretrained(str(tmp_path / "soup"))
    again = runner.evaluate(lambda t, task=None, titles=None: model.embed(t, task=task, titles=titles),
                            "STSBenchmark:dev", progress=False)["STSBenchmark:dev"]["main_score"]
    assert again == pytest.approx(rec["dev"], abs=1e-6)
    assert "greedy soup of" in provenance.summary(model.provenance)


def test_ingredients_of_different_shapes_are_refused(tmp_path):
    a, b = _export(tmp_path / "a", 0), _export(tmp_path / "b", 0, projection=(16,), mrl_dims=(16,))
    with pytest.raises(ValueError, match=rf"cannot soup {a} and {b}: .*projection.*float32\[.*32\].*16\]"):
        soup.make_soup([str(a), str(b)], "uniform", tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_bad_requests_are_refused(tmp_path):
    a = _export(tmp_path / "a", 0)
    with pytest.raises(ValueError, match="greedy needs --dev"):
        soup.make_soup([str(a)], "greedy", tmp_path / "s")
    with pytest.raises(ValueError, match="'MRPC': no dev split"):
        soup.make_soup([str(a)], "greedy", tmp_path / "s", dev="MRPC")
    with pytest.raises(SystemExit, match="SciFact"):  # a test split is never a dev task: it names the dev tasks
        soup.main(["--inputs", str(a), "--method", "greedy", "--dev", "STS12", "--output", str(tmp_path / "s")])


@pytest.mark.slow
def test_a_stage_starts_from_another_runs_params_with_a_fresh_optimizer(tmp_path):
    """Stage 2 with lr 0 keeps stage 1's params exactly; its steps count from 0; provenance chains."""
    import ml_collections

    from gemini_embed.train.loop import train
    from experiments import tiny

    def config(steps, **model):
        c = tiny.get_config()
        c.train.steps, c.checkpoint.every = steps, steps
        c.model.update(model)
        return c

    train(config(2), str(tmp_path / "s1"))
    c2 = config(3, init_from=str(tmp_path / "s1"))
    c2.optim.lr = 0.0
    train(c2, str(tmp_path / "s2"))
    for x, y in zip(_leaves(tmp_path / "s1"), _leaves(tmp_path / "s2"), strict=True):
        np.testing.assert_array_equal(x, y)
    assert sorted(int(p.name) for p in (tmp_path / "s2" / "checkpoints").iterdir() if p.name.isdigit()) == [3]
    rec = provenance.read(tmp_path / "s2")
    assert rec["init_from"] == str((tmp_path / "s1").resolve())
    assert rec["parent"] == provenance.read(tmp_path / "s1") and rec["parent"]["init_from"] is None
    assert rec["data"]["sources"] == c2.data.sources and rec["code"]["commit"]
    model = ge.Embedder.from_pretrained(str(tmp_path / "s2"))
    assert model.provenance == rec
    assert isinstance(ml_collections.ConfigDict(rec["config"]), ml_collections.ConfigDict)


def test_a_trained_model_keeps_its_head_and_takes_encoder_overrides(tmp_path):
    """An export loads with its trained projection; asking for another head is a clear error, not
    silently ignored, while encoder overrides (here the compute dtype) apply."""
    a = _export(tmp_path / "a", 0)
    assert resolve(str(a)).config.projection == (32,)
    with pytest.raises(ValueError, match=r"trained with projection \(32,\); projection=None"):
        resolve(str(a), projection=None)
    with pytest.raises(ValueError, match=r"trained with MRL dims \(16, 32\), not \(8, 32\)"):
        resolve(str(a), mrl_dims=(8, 32))
    assert resolve(str(a), projection=(32,), mrl_dims=(16, 32)).config.mrl_dims == (16, 32)  # the same: fine
    low = ge.Embedder.from_pretrained(str(a), dtype="bfloat16")
    assert low.config.encoder.dtype == "bfloat16"
    full = ge.Embedder.from_pretrained(str(a)).embed(["a man plays a guitar"])
    got = low.embed(["a man plays a guitar"])
    assert not np.array_equal(got, full) and float((got @ full.T)[0, 0]) > 0.99  # bf16 compute, same model
