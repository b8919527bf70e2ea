#!/usr/bin/env bash
# Run the train command as N local processes that act as the hosts of a pod (CPU devices,
# gloo collectives through jax.distributed). Used by the tests; handy to debug multi-host code.
#
#   launch/local.sh N --config experiments/tiny.py --workdir runs/tiny2 [--config.key=value ...]
#
# DEVICES_PER_PROCESS (default 4) CPU devices per process; PORT (default: a free one) for the
# coordinator. Exits non-zero if any process fails. SIGTERM or SIGINT to this script (a scheduler,
# `timeout`, Ctrl-C) is passed to every trainer, which saves at the preemption sync point and
# exits 0; if this script is killed outright, the trainers get SIGTERM from the kernel
# (GEMINI_EMBED_LAUNCHER_PID, see gemini_embed/runtime.py): none is left behind.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 NUM_PROCESSES [train command flags...]" >&2
  exit 2
fi
n=$1
shift
cd "$(dirname "$0")/.."
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
port=${PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$i" \
  GEMINI_EMBED_LAUNCHER_PID=$$ \
    "$py" -m gemini_embed.main "$@" &
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT  # pass the stop on to every trainer
status=0
for pid in "${pids[@]}"; do
  while true; do  # a trapped signal ends `wait` early: wait again until this child has exited
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"
