#!/usr/bin/env bash
# Run the train command on every host of a Cloud TPU VM slice: create the slice (or reuse it),
# copy this working tree to every worker, install it with the `tpu` extra, mount the shared
# bucket, then run the same command on all workers (--worker=all). jax.distributed finds the
# other hosts itself (GEMINI_EMBED_DISTRIBUTED=1). See launch/README.md for needs and costs.
#
#   launch/tpu_vm.sh [--dry_run] --slice v5e:16x16 --name NAME --zone ZONE [--project P]
#       [--bucket BUCKET] [--spot] -- --config experiments/gemma3_27b_pod.py --workdir /mnt/shared/runs/x
#
# --slice takes the same names as --compile_only --topology: v5e:AxB, v5p:AxBxC, v4:AxBxC.
# The workdir and data must be on the shared mount (default /mnt/shared, the bucket via gcsfuse).
set -euo pipefail

# shellcheck source=launch/quote.sh
. "$(dirname "$0")/quote.sh"

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

dry_run=0 slice="" name="" zone="" project="" bucket="" spot=0 mount=/mnt/shared
while [ $# -gt 0 ]; do
  case "$1" in
    --dry_run) dry_run=1 ;;
    --slice) slice=$2; shift ;;
    --name) name=$2; shift ;;
    --zone) zone=$2; shift ;;
    --project) project=$2; shift ;;
    --bucket) bucket=$2; shift ;;
    --mount) mount=$2; shift ;;
    --spot) spot=1 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (train flags go after --)" >&2; usage ;;
  esac
  shift
done
if [ -z "$slice" ] || [ -z "$name" ] || [ -z "$zone" ] || [ $# -eq 0 ]; then usage; fi

gen=${slice%%:*}
grid=${slice#*:}
if ! [[ "$grid" =~ ^[0-9]+(x[0-9]+){1,2}$ ]]; then
  echo "--slice $slice: expected GEN:AxB[xC], e.g. v5e:16x16 or v5p:4x4x8" >&2
  exit 2
fi
chips=$((${grid//x/*}))
# Accelerator types count chips for v5e and TensorCores (2 per chip) for v4 / v5p.
case "$gen" in
  v5e) accel="v5litepod-$chips" version=v2-alpha-tpuv5-lite ;;
  v5p) accel="v5p-$((2 * chips))" version=v2-alpha-tpuv5 ;;
  v4) accel="v4-$((2 * chips))" version=tpu-ubuntu2204-base ;;
  *) echo "--slice $slice: generation must be v5e, v5p or v4" >&2; exit 2 ;;
esac

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[ -n "$project" ] && where+=(--project "$project")

run() {  # print the command; run it unless --dry_run
  local arg line="+"
  for arg in "$@"; do line+=" $(quote "$arg")"; done
  echo "$line"
  [ "$dry_run" = 1 ] || "$@"
}

# 1. The slice: reuse it if it exists, else create it.
if [ "$dry_run" = 0 ] && "${gcloud_tpu[@]}" describe "$name" "${where[@]}" > /dev/null 2>&1; then
  echo "reusing TPU VM $name"
else
  [ "$dry_run" = 1 ] && echo "# if '${gcloud_tpu[*]} describe $name' fails:"
  create=("${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accel" --version "$version")
  [ "$spot" = 1 ] && create+=(--spot)
  run "${create[@]}"
fi

# 2. This working tree (tracked and untracked, not ignored) to every worker, installed there.
cd "$(dirname "$0")/.."
tarball=${TMPDIR:-/tmp}/gemini_embed_$name.tgz
if [ "$dry_run" = 1 ]; then
  echo "+ git ls-files -co --exclude-standard | tar czf $tarball -T -"
else
  git ls-files -co --exclude-standard | tar czf "$tarball" -T -
fi
run "${gcloud_tpu[@]}" scp "$tarball" "$name:gemini_embed.tgz" "${where[@]}" --worker=all
setup="mkdir -p gemini_embed && tar xzf gemini_embed.tgz -C gemini_embed && cd gemini_embed"
setup+=" && { [ -x .venv/bin/python ] || python3 -m venv .venv; } && .venv/bin/pip install -q -e '.[tpu]'"
if [ -n "$bucket" ]; then  # the shared bucket on every worker (gcsfuse ships with the TPU VM images)
  setup+=" && sudo mkdir -p $mount && sudo chown \$USER $mount"
  setup+=" && { mountpoint -q $mount || gcsfuse --implicit-dirs $bucket $mount; }"
fi
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$setup"

# 3. The same command on every worker; each process joins through jax.distributed.
train=$(printf ' %q' "$@")
command="cd gemini_embed && GEMINI_EMBED_DISTRIBUTED=1 GEMINI_EMBED_DATA=$mount/data"
command+=" .venv/bin/python -m gemini_embed.main$train"
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$command"
