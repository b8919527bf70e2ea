"""The comparison of two evaluate runs (`python -m gemini_embed.eval.compare BEFORE AFTER`)."""
import json

import pytest

from gemini_embed.eval import compare


def _run(**tasks):
    return {t: {"main_score": s.get("a", 0.0), "metric": "a", "scores": s, "num_samples": 1, "seconds": 0.0}
            for t, s in tasks.items()}


def test_score_differences_finds_the_worst_score_and_what_is_missing():
    before = _run(T1={"a": 0.5, "b": 0.25}, T2={"a": 0.1}, T3={"a": 0.3})
    after = _run(T1={"a": 0.5, "b": 0.2500004}, T2={"a": 0.1, "new": 1.0}, T4={"a": 0.3})
    d = compare.score_differences(before, after)
    assert d["T1"][1] == "b" and abs(d["T1"][0] - 4e-7) < 1e-12
    assert d["T2"] == (float("inf"), "new")
    assert d["T3"] == d["T4"] == (float("inf"), "task missing")


def test_command_exits_1_only_beyond_the_tolerance(tmp_path, capsys):
    files = []
    for name, b in (("before", 0.25), ("after", 0.2500004)):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"tasks": _run(T1={"a": 0.5, "b": b})}))
        files.append(str(f))
    assert compare.main(files) == 0
    assert "1 tasks, 2 scores; largest difference 4e-07 (T1: b); over 1e-06: 0" in capsys.readouterr().out
    assert compare.main([*files, "--tolerance", "1e-7"]) == 1
    assert "T1: b differs by 4e-07" in capsys.readouterr().out


def test_lists_and_texts_compare_elementwise():
    before = _run(T={"a": 0.5, "per_fold": [0.1, 0.2], "name": "x"})
    assert compare.score_differences(before, _run(T={"a": 0.5, "per_fold": [0.1, 0.2005], "name": "x"}))["T"] == \
        pytest.approx((5e-4, "per_fold"))
    assert compare.score_differences(before, _run(T={"a": 0.5, "per_fold": [0.1], "name": "x"}))["T"][0] == float("inf")
    assert compare.score_differences(before, _run(T={"a": 0.5, "per_fold": [0.1, 0.2], "name": "y"}))["T"] == \
        (float("inf"), "name")
    nested = _run(T={"folds": [{"acc": 0.5, "f1": 0.25}]})
    assert compare.score_differences(nested, _run(T={"folds": [{"acc": 0.5, "f1": 0.2500002}]}))["T"] == \
        pytest.approx((2e-7, "folds"))
    assert compare.score_differences(nested, _run(T={"folds": [{"acc": 0.5}]}))["T"][0] == float("inf")
