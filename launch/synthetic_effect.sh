#!/usr/bin/env bash
# The synthetic-data effect (docs/synthetic.md), end to end: write questions for 400 SQuAD train
# paragraphs with Gemma 3 270M (and the human control arm), filter them, pre-finetune four arms of
# Gemma 3 270M at equal steps and evaluate each on STS Benchmark, CoSQA and SciFact.
# Every step resumes: a rerun skips written rows, finished runs and finished tasks.
# Measured on the 2-core CPU (docs/synthetic.md): 18-27 min of data, 8-21 min per training arm,
# 7 min per STSB+CoSQA evaluation; SciFact ~30-60 min per arm (not run yet).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
S=${OUT:-runs/synth}
T="/usr/bin/time -f"
mkdir -p "$S/eval"
$T "synth: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.synth \
  --corpus squad:../shared/data/squad_v1.1_train/squad_v1.1_train.jsonl.gz \
  --kind query --n 400 --seed 0 --output "$S/squad_synth.jsonl" \
  --human_counterpart "$S/squad_human.jsonl"
[ -s "$S/squad_synth.kept.jsonl" ] || $T "filter: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.filter_pairs \
  --input "$S/squad_synth.jsonl" --output "$S/squad_synth.kept.jsonl"
declare -A SRC=(
  [synth]="squad-titles-train,$S/squad_synth.jsonl"
  [synth_filtered]="squad-titles-train,$S/squad_synth.kept.jsonl"
  [human]="squad-titles-train,$S/squad_human.jsonl"
  [none]="squad-titles-train"
)
ARMS="synth synth_filtered human none"
for arm in $ARMS; do
  rates=1,1
  [ "$arm" = none ] && rates=1
  echo "== train $arm $(date -u +%H:%M:%S)"
  $T "train $arm: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.main \
    --config experiments/gemma3_270m_recipe.py:prefinetune --workdir "$S/pf_$arm" \
    --config.data.sources="${SRC[$arm]}" --config.data.rates="$rates"
done
for tasks in STSBenchmark,CoSQA SciFact; do
  for arm in $ARMS; do
    echo "== eval $arm $tasks $(date -u +%H:%M:%S)"
    $T "eval $arm $tasks: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.evaluate \
      --model "$S/pf_$arm" --tasks "$tasks" --max_length 256 --output "$S/eval/pf_${arm}_${tasks//,/_}.json"
  done
done
echo "== done $(date -u +%H:%M:%S)"
