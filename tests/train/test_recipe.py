"""The recipe driver end to end on the tiny model: stages chain, the soup is built on dev, every
row is evaluated, and a rerun runs only what is missing."""
import json
import pathlib

import pytest

from gemini_embed import recipe
from gemini_embed.train import provenance

pytestmark = pytest.mark.slow
RECIPE = str(pathlib.Path(__file__).with_name("tiny_recipe.py"))


def _steps(w):
    return [ln.split(" ", 2)[2].split(":")[0] for ln in (w / "commands.log").read_text().splitlines()]


def test_recipe_runs_every_step_once_and_resumes(tmp_path):
    w = tmp_path / "r"
    recipe.run(RECIPE, str(w))
    assert _steps(w) == ["stage1", "stage2a", "stage2b", "soup", "eval raw", "eval stage1", "eval stage2a",
                         "eval stage2b", "eval soup"]
    assert provenance.read(w / "stage2b")["init_from"] == str(w / "stage1")
    soup = provenance.read(w / "soup")["soup"]
    assert soup["dev"] >= max(h["dev"] for h in soup["history"][:2])
    table = (w / "recipe.md").read_text()
    assert table.count("\n| ") == 5 and "STSBenchmark" in table  # rows: raw, three stages, the soup
    assert (w / "curves.png").stat().st_size > 0
    times = json.loads((w / "times.json").read_text())
    assert all(t["cpu_s"] > 0 and t["runs"] == 1 for t in times.values())

    soup_eval = w / "eval" / "soup.json"  # as if the driver had been killed during the last evaluation
    soup_eval.write_text(json.dumps({**json.loads(soup_eval.read_text()), "complete": False}))
    recipe.run(RECIPE, str(w))
    assert _steps(w)[9:] == ["eval soup"] and json.loads(soup_eval.read_text())["complete"]


def test_a_stage_started_with_another_config_is_refused(tmp_path):
    """A stage whose provenance records another training config is not resumed under the new one."""
    config = recipe.load_recipe(RECIPE).get_config("stage1")
    stage = tmp_path / "stage1"
    stage.mkdir()
    record = provenance.for_run(config.to_dict(), None)
    del record["config"]["loss"]["cosent_temperature"]  # a key added since, left at its default: no change
    provenance.write(stage, record)
    assert recipe.changed_config(stage, config) == []
    config.loss.cosent_temperature = 0.1
    assert recipe.changed_config(stage, config) == ["loss.cosent_temperature"]
    config.loss.cosent_temperature = 0.05
    config.train.steps += 10
    config.data.rates = "1,2"
    assert recipe.changed_config(stage, config) == ["data.rates", "train.steps"]
    provenance.write(stage, provenance.for_run(config.to_dict(), None))  # as if started with those
    with pytest.raises(SystemExit, match=r"stage1 was started with another config \(data.rates, train.steps"):
        recipe.run(RECIPE, str(tmp_path))
    assert not (tmp_path / "commands.log").exists()  # nothing ran
