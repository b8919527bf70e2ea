#!/usr/bin/env bash
# The synthetic-data effect (docs/synthetic.md): four pre-finetuning arms of Gemma 3 270M at equal
# steps, each evaluated on STS Benchmark and CoSQA. Needs the files of the synth and filter_pairs
# commands in docs/synthetic.md under runs/synth/. ~10 min per arm on the 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
S=runs/synth
declare -A SRC=(
  [synth]="squad-titles-train,$S/squad_synth.jsonl"
  [synth_filtered]="squad-titles-train,$S/squad_synth.kept.jsonl"
  [human]="squad-titles-train,$S/squad_human.jsonl"
  [none]="squad-titles-train"
)
for arm in synth synth_filtered human none; do
  rates=1,1
  [ "$arm" = none ] && rates=1
  echo "== $arm $(date -u +%H:%M:%S)"
  /usr/bin/time -f "train $arm: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.main \
    --config experiments/gemma3_270m_recipe.py:prefinetune --workdir "$S/pf_$arm" \
    --config.data.sources="${SRC[$arm]}" --config.data.rates="$rates"
  /usr/bin/time -f "eval $arm: %e s wall, %U+%S s CPU, %M KB" "$PY" -m gemini_embed.evaluate --model "$S/pf_$arm" \
    --tasks STSBenchmark,CoSQA --max_length 256 --output "$S/eval/pf_$arm.json"
done
echo "== done $(date -u +%H:%M:%S)"
