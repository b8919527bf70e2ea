#!/usr/bin/env bash
# The GPU check in one command (at most 10 minutes) on a machine with an NVIDIA GPU: parity of
# Gemma 3 270M and all-MiniLM-L6-v2 on the GPU, embed throughput vs HF transformers on the same
# GPU (float32 and bfloat16), and the train-step MFU of a Gemma 3 1B-size encoder in bf16.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default runs/gpu; writes OUT_DIR/gpu_check.json
#
# Needs the project's environment (launch/setup.sh) plus jax's CUDA plugin and a CUDA build of
# torch (the HF peer runs on the GPU too; with a CPU-only torch the ratios compare unlike devices,
# and the printed "devices" line says so). The benchmark data: GEMINI_EMBED_DATA or ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || bash launch/setup.sh
if ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  version=$("$PY" -c 'import jax; print(jax.__version__)')
  "$PY" -m pip install -q "jax[cuda12]==$version"
fi
export GEMINI_EMBED_DATA=${GEMINI_EMBED_DATA:-$(pwd)/../shared/data}
export PYTHONUNBUFFERED=1
timeout 600 "$PY" benchmarks/gpu_check.py --out "${1:-runs/gpu}"
