#!/usr/bin/env bash
# Creates ./.venv with gemini_embed and everything its tests and reference checks need.
# Idempotent: a second run only verifies the installed versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned in the same pip command as the rest, so pip takes the CPU build. The tpu extra
# (libtpu) lets the tests compile for TPU pod topologies on this CPU (tests/train/test_compile_only.py).
.venv/bin/python -m pip install -q -e ".[test,reference,tpu,viz]"
