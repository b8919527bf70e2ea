"""The train command end to end (subprocesses: each needs its own device count or process group).

Tiny config (random tiny Gemma, real tokenizer, real training pairs): kill -9 and resume equals an
uninterrupted run bit for bit; 2 processes x 4 devices equal 1 process x 8 devices.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gemini_embed.train.export import load_params

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env(ndev):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={ndev}", JAX_PLATFORMS="cpu",
               PYTHONUNBUFFERED="1")
    return env


def _cmd(workdir, *overrides):
    return [sys.executable, "-m", "gemini_embed.main", "--config", str(ROOT / "experiments/tiny.py"),
            "--workdir", str(workdir), "--config.train.log_every=1", *overrides]


def _metrics(workdir):
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _run(workdir, *overrides, ndev=8):
    p = subprocess.run(_cmd(workdir, *overrides), cwd=ROOT, env=_env(ndev), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def _final_params(workdir):
    params, config = load_params(workdir)
    return jax.tree.leaves(params), config


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    common = ["--config.train.steps=8", "--config.checkpoint.every=3"]
    _run(tmp_path / "straight", *common)
    killed = tmp_path / "killed"
    p = subprocess.Popen(_cmd(killed, *common), cwd=ROOT, env=_env(8), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and p.poll() is None:
        rows = []
        try:
            rows = _metrics(killed)
        except json.JSONDecodeError:  # a line being written
            pass
        if rows and rows[-1]["step"] >= 5:  # between checkpoints 3 and 6
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    _run(killed, *common)
    a, b = _metrics(killed), _metrics(tmp_path / "straight")
    assert [r["step"] for r in a] == list(range(1, 9))  # every step exactly once
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    for r in b:  # throughput and MFU count non-padding tokens; the padded figures come beside them
        assert 0 <= r["padding"] < 1 and r["peak_flops"] == b[0]["peak_flops"] > 0
        assert r["tokens_per_sec"] == pytest.approx((1 - r["padding"]) * r["padded_tokens_per_sec"])
        assert r["mfu"] > 0 and r["mfu_padded"] > 0
    pa, _ = _final_params(killed)
    pb, config = _final_params(tmp_path / "straight")
    assert config["model"]["name"] == "gemma3-tiny"
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_two_processes_match_one(tmp_path):
    steps = "--config.train.steps=4"
    _run(tmp_path / "one", steps, ndev=8)
    p = subprocess.run(["bash", str(ROOT / "launch/local.sh"), "2", *_cmd(tmp_path / "two", steps)[3:]],
                       cwd=ROOT, env=dict(_env(4), DEVICES_PER_PROCESS="4", PYTHON=sys.executable),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)


def test_an_unknown_config_key_is_one_line(tmp_path):
    p = subprocess.run(_cmd(tmp_path, "--config.train.nosuch=1"), cwd=ROOT, env=_env(1), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: config.train.nosuch is not a key of the config")


def test_a_workdir_resumes_only_its_own_model(tmp_path, capsys):
    from experiments import tiny
    from gemini_embed.train.loop import train

    c = tiny.get_config()
    c.train.steps, c.checkpoint.every = 1, 1
    train(c, str(tmp_path))
    out = capsys.readouterr().out
    assert f"done: 1 steps in {tmp_path} (checkpoints" in out and "final loss" in out
    # a finished run again: a message, no data pipeline, no compilation
    assert train(c, str(tmp_path)) == {"steps": 1, "resumed_from": 1, "already_done": True}
    out = capsys.readouterr().out
    assert "already trained to step 1 of 1; nothing to do" in out and "compiled train step" not in out
    c.model.overrides = {"num_layers": 2}
    c.train.steps = 2
    with pytest.raises(ValueError, match=r"holds checkpoints of another model \(encoder: .*\"num_layers\": 3"):
        train(c, str(tmp_path))
