#!/usr/bin/env bash
# Run the train command on a SLURM GPU cluster: srun starts one process per GPU (default) or one
# per node; each calls jax.distributed.initialize(), which reads the SLURM environment (job id,
# task count, node list, local rank). Code, venv, data and workdir live on the shared filesystem.
# See launch/README.md for needs and costs.
#
#   launch/gpu_slurm.sh [--dry_run] --nodes N --gpus_per_node G [--per gpu|node] [--partition P]
#       [--account A] [--time HH:MM:SS] [--shared DIR] -- --config experiments/gemma3_4b_pod.py --workdir DIR/runs/x
#
# Run it from the checkout on the shared filesystem, with its .venv holding jax[cuda12]
# (pip install -e . "jax[cuda12]==0.10.2"). PYTHON overrides the interpreter.
set -euo pipefail

# shellcheck source=launch/quote.sh
. "$(dirname "$0")/quote.sh"

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

dry_run=0 nodes="" gpus="" per=gpu partition="" account="" time_limit=24:00:00 shared=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry_run) dry_run=1 ;;
    --nodes) nodes=$2; shift ;;
    --gpus_per_node) gpus=$2; shift ;;
    --per) per=$2; shift ;;
    --partition) partition=$2; shift ;;
    --account) account=$2; shift ;;
    --time) time_limit=$2; shift ;;
    --shared) shared=$2; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1 (train flags go after --)" >&2; usage ;;
  esac
  shift
done
if ! [[ "$nodes" =~ ^[0-9]+$ ]] || ! [[ "$gpus" =~ ^[0-9]+$ ]] || [ $# -eq 0 ]; then usage; fi

cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-$root/.venv/bin/python}
shared=${shared:-$root}

srun_cmd=(srun --nodes "$nodes" --gpus-per-node "$gpus" --time "$time_limit" --kill-on-bad-exit=1)
case "$per" in
  # One process per GPU: jax.distributed.initialize() gives each process one local GPU.
  # Every task sees the node's GPUs (no per-task binding): jax picks device SLURM_LOCALID.
  gpu) srun_cmd+=(--ntasks-per-node "$gpus") ;;
  # One process per node driving all of its GPUs.
  node) srun_cmd+=(--ntasks-per-node 1) ;;
  *) echo "--per $per: expected gpu or node" >&2; exit 2 ;;
esac
[ -n "$partition" ] && srun_cmd+=(--partition "$partition")
[ -n "$account" ] && srun_cmd+=(--account "$account")
# SLURM_JOB_ID in the tasks' environment makes main.py call jax.distributed.initialize().
srun_cmd+=(--export "ALL,JAX_PLATFORMS=cuda,GEMINI_EMBED_DATA=$shared/data" --chdir "$root")
srun_cmd+=("$py" -m gemini_embed.main "$@")

line="+"
for arg in "${srun_cmd[@]}"; do line+=" $(quote "$arg")"; done
echo "$line"
[ "$dry_run" = 1 ] || exec "${srun_cmd[@]}"
