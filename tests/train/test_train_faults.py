"""Faults a training job meets, provoked for real on the train command (tiny config, subprocesses):
a checkpoint write that fails (RLIMIT_FSIZE makes the kernel refuse it with EFBIG, as a full disk
refuses with ENOSPC), SIGTERM to one trainer, SIGTERM and SIGKILL to the multi-process launcher."""
import os
import pathlib
import resource
import signal
import subprocess
import time

import pytest

from test_train_command import ROOT, _cmd, _env, _metrics, _run

pytestmark = pytest.mark.slow


def _steps_on_disk(workdir):
    return sorted(int(p.name) for p in (pathlib.Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _trainers(workdir):
    """PIDs of the live train commands (not the launcher) working in `workdir`."""
    out = subprocess.run(["pgrep", "-f", f"gemini_embed.main .*--workdir {workdir}"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_a_failed_checkpoint_save_stops_the_run_at_once(tmp_path):
    every = ["--config.checkpoint.every=10"]
    _run(tmp_path, "--config.train.steps=10", *every)  # step 10 saved; data and programs cached
    limit = 8 * 2**20  # the token table's file is ~67 MB: the kernel refuses the write beyond 8 MB

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG

    p = subprocess.run(_cmd(tmp_path, "--config.train.steps=60", *every), cwd=ROOT, env=_env(8),
                       capture_output=True, text=True, timeout=900, preexec_fn=small_files)
    assert p.returncode != 0
    # The one-line error; orbax's reader coroutines may still print their own traceback after it.
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert errors[0].startswith(f"error: checkpoint of step 20 was not written to {tmp_path}/checkpoints")
    assert "[Errno 27] File too large" in errors[0], errors[0]
    assert "the last good checkpoint is step 10" in errors[0], errors[0]
    assert max(m["step"] for m in _metrics(tmp_path)) < 30  # before: it trained on to the next save
    assert _steps_on_disk(tmp_path) == [10]
    _run(tmp_path, "--config.train.steps=12", *every)  # the good checkpoint still resumes
    assert _steps_on_disk(tmp_path) == [10, 12]


def test_sigterm_saves_once_and_exits_0(tmp_path):
    p = subprocess.Popen(_cmd(tmp_path, "--config.train.steps=100000", "--config.checkpoint.every=100000"),
                         cwd=ROOT, env=_env(8), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_metrics(tmp_path)) >= 3, 600, "3 logged steps")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    stopped = max(m["step"] for m in _metrics(tmp_path))
    assert _steps_on_disk(tmp_path) == [stopped]
    assert f"preempted (SIGTERM): saved step {stopped}" in err
    resumed = subprocess.run(_cmd(tmp_path, f"--config.train.steps={stopped + 2}"), cwd=ROOT, env=_env(8),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0 and f"resumed from step {stopped} " in resumed.stderr


def _launch(workdir):
    args = _cmd(workdir, "--config.train.steps=100000", "--config.checkpoint.every=100000")[3:]
    p = subprocess.Popen(["bash", str(ROOT / "launch/local.sh"), "2", *args], cwd=ROOT, env=_env(8),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_metrics(workdir)) >= 3, 600, "3 logged steps of 2 processes")
    assert len(_trainers(workdir)) == 2
    return p


def test_sigterm_to_the_launcher_stops_every_trainer_cleanly(tmp_path):
    p = _launch(tmp_path)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    assert _trainers(tmp_path) == []
    stopped = max(m["step"] for m in _metrics(tmp_path))
    assert _steps_on_disk(tmp_path) in ([stopped], [stopped + 1])  # the sync point may be the next step


def test_a_killed_launcher_leaves_no_trainer_behind(tmp_path):
    p = _launch(tmp_path)
    children = _trainers(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    _wait_for(lambda: not _trainers(tmp_path), 180, f"trainers {children} to exit")
