"""The `gemini-embed` console script, and a silent libtpu for the Python API on a machine without TPUs."""
import os
import pathlib
import subprocess
import sys

import pytest

from reference_libs import require

from gemini_embed import cli

BIN = pathlib.Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}  # as a user's shell


def run(*args, **kw):
    return subprocess.run([*args], capture_output=True, text=True, env=ENV, timeout=300, **kw)


def test_script_lists_every_command():
    script = BIN / "gemini-embed"
    assert script.exists(), "the [project.scripts] entry point is not installed (pip install -e .)"
    p = run(str(script), "--help")
    assert p.returncode == 0, p.stderr
    for name in cli.COMMANDS:
        assert f"  {name} " in p.stdout
    p = run(str(script), "nosuch")
    assert p.returncode != 0 and "unknown command 'nosuch'" in p.stderr


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_runs_its_module(command):
    p = run(str(BIN / "gemini-embed"), command, "--help")
    out = p.stdout + p.stderr
    if command == "train":  # absl's help (which exits 1, as `python -m gemini_embed.main --help` does)
        assert p.returncode in (0, 1) and "Traceback" not in out, out[-2000:]
        assert "The train command" in out and "--workdir" in out and "--compile_only" in out
    else:
        assert p.returncode == 0, out[-2000:]
        assert f"usage: gemini-embed {command}" in out


def test_python_api_prints_no_libtpu_errors():
    require("libtpu")  # the tpu extra (installed by launch/setup.sh) is what would print them
    code = "import gemini_embed as ge; print(ge.Embedder.from_pretrained('all-minilm-l6-v2').embed(['hello']).shape)"
    p = run(sys.executable, "-c", code)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "(1, 384)" in p.stdout
    for noise in ("TPU", "libtpu", "Source Location", "hostname"):
        assert noise not in p.stderr, p.stderr[-2000:]
