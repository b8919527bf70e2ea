"""The evaluate command on the tiny model: every finished task is saved at once, so a run that
fails on a later task keeps the earlier ones, and a rerun evaluates only what is missing."""
import json

import pytest

from gemini_embed import evaluate


def test_a_failing_task_keeps_the_finished_ones_and_a_rerun_skips_them(tmp_path, capsys):
    bad = tmp_path / "mine.tsv"
    bad.write_text("sentence1\tsentence2\tscore\na man sings\ta man is singing\t4.5\na cat\ta dog\tnot a number\n")
    out = tmp_path / "r.json"
    argv = ["--model", "gemma3-tiny", "--tasks", f"STS17:en-en,sts:{bad}", "--output", str(out),
            "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match=r"^error: .*mine.tsv:3"):  # one line, not a traceback
        evaluate.main(argv)
    first = json.loads(out.read_text())
    assert not first["complete"] and list(first["tasks"]) == ["STS17:en-en"]

    bad.write_text("sentence1\tsentence2\tscore\na man sings\ta man is singing\t4.5\na cat\ta dog\t0.5\n"
                   "a girl runs\ta child is running\t3.0\n")
    capsys.readouterr()
    second = evaluate.main(argv)
    assert "1 task(s) already evaluated with this model and settings, kept: STS17:en-en" in capsys.readouterr().out
    assert second["complete"] and list(second["tasks"]) == ["STS17:en-en", f"sts:{bad}"]
    assert second["tasks"]["STS17:en-en"] == first["tasks"]["STS17:en-en"]  # read back, not run again
    # Other settings (here the Matryoshka dim) are another evaluation: nothing is reused.
    third = evaluate.main(argv + ["--dims", "16"])
    assert third["tasks"]["STS17:en-en"]["dims"] == 16 and third["complete"]
