#!/usr/bin/env bash
# On a GPU machine: a few steps of every stage on the default model, in bf16, with QLoRA 4-bit and with gradient
# checkpointing (PPO and GRPO for the RL stage), and PPO on 2 processes when the machine has 2 GPUs (on one GPU, the
# RL loop's collectives through a one-rank NCCL group instead). Prints peak GPU memory and step time of each run and
# exits non-zero if any run fails.
#
#   bash scripts/gpu_check.sh              # on a machine with a CUDA GPU (needs bitsandbytes for the 4-bit runs)
#   bash scripts/gpu_check.sh --cpu-smoke  # the same commands on a CPU, tiny step counts, no QLoRA: proves the plumbing
#
# Run from the repository root with the project's environment active (or PYTHON=/path/to/python).
# GPU_CHECK_MODEL=FOLDER runs another model (the smoke test in CI-less checks uses a tiny one).
# GPU_CHECK_VARIANTS="bf16 qlora4" runs only those variants (several scripts with different GPU_CHECK_OUT can then
# share one GPU side by side).
set -euo pipefail

PYTHON=${PYTHON:-python}
MODEL=${GPU_CHECK_MODEL:-smollm2-135m-instruct}
MODE=gpu
[[ "${1:-}" == "--cpu-smoke" ]] && MODE=cpu-smoke
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t posttrain-gpu-check.XXXXXX)}
RESULTS="$OUT/results.tsv"
mkdir -p "$OUT"
printf "run\tstatus\tpeak_gpu_mib\tseconds_per_step\n" > "$RESULTS"

if [[ "$MODE" == gpu ]]; then
  GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  if [[ "$GPUS" -lt 1 ]]; then
    echo "gpu_check: no CUDA GPU visible (torch.cuda.device_count() is 0); use --cpu-smoke on a CPU." >&2
    exit 2
  fi
  STEPS=5; PPO_STEPS=3; LENGTH=512; NEW_TOKENS=48
  VARIANTS=("bf16:" "qlora4:--quantization 4bit" "checkpointing:--gradient_checkpointing true")
else
  GPUS=0
  STEPS=1; PPO_STEPS=1; LENGTH=256; NEW_TOKENS=4
  VARIANTS=("bf16:" "checkpointing:--gradient_checkpointing true")  # bitsandbytes' 4-bit kernels need CUDA
fi
if [[ -n "${GPU_CHECK_VARIANTS:-}" ]]; then
  chosen=()
  for variant in "${VARIANTS[@]}"; do
    [[ " $GPU_CHECK_VARIANTS " == *" ${variant%%:*} "* ]] && chosen+=("$variant")
  done
  if [[ ${#chosen[@]} -eq 0 ]]; then
    echo "gpu_check: GPU_CHECK_VARIANTS='$GPU_CHECK_VARIANTS' names none of: ${VARIANTS[*]%%:*}" >&2
    exit 2
  fi
  VARIANTS=("${chosen[@]}")
fi
echo "gpu_check: mode $MODE, $GPUS GPU(s), variants ${VARIANTS[*]%%:*}, output in $OUT"

# Data: the shipped samples, cut short in the smoke mode
head -n 16 data_samples/sft_messages.jsonl > "$OUT/sft.jsonl"
head -n 16 data_samples/preferences.jsonl > "$OUT/prefs.jsonl"
head -n 16 data_samples/prompts.jsonl > "$OUT/prompts.jsonl"

FAILED=0
# run NAME STEPS COMMAND...: runs the command with a wrapper that records peak GPU memory (torch's allocator, all
# devices of this process) and the seconds per step, appends a row to the results, and never stops the script
run() {
  local name=$1 steps=$2; shift 2
  local log="$OUT/$name.log"
  if [[ "${2:-}" == "-c" ]]; then echo "--- $name: posttrain ${*:4}"; else echo "--- $name: $*"; fi
  local start; start=$(date +%s.%N)
  if "$@" > "$log" 2>&1; then
    local end; end=$(date +%s.%N)
    local peak; peak=$(grep -o 'gpu_check_peak_mib=[0-9.]*' "$log" | tail -1 | cut -d= -f2 || true)
    local per_step; per_step=$("$PYTHON" -c "print(f'{($end - $start) / $steps:.2f}')")
    printf "%s\tok\t%s\t%s\n" "$name" "${peak:-n/a}" "$per_step" >> "$RESULTS"
    echo "    ok: peak GPU memory ${peak:-n/a} MiB, $per_step s/step (wall time over $steps steps, loading included)"
  else
    FAILED=1
    printf "%s\tFAILED\t-\t-\n" "$name" >> "$RESULTS"
    echo "    FAILED (last lines of $log):"
    tail -n 20 "$log" | sed 's/^/      /'
  fi
}

# the CLI under a wrapper that prints torch's peak GPU memory of this process when the command ends
WRAP=(-c "import sys, atexit, torch
from posttrain.cli import main
def report():
    if torch.cuda.is_available():
        peak = max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**20
        print(f'gpu_check_peak_mib={peak:.0f}', flush=True)
atexit.register(report)
sys.exit(main(sys.argv[1:]))")

for variant in "${VARIANTS[@]}"; do
  tag=${variant%%:*}; flags=${variant#*:}
  # shellcheck disable=SC2086  # flags is a list of words
  run "sft-$tag" "$STEPS" "$PYTHON" "${WRAP[@]}" sft --model "$MODEL" --data "$OUT/sft.jsonl" --output "$OUT/sft-$tag" \
      --train.max_steps "$STEPS" --train.max_length "$LENGTH" --train.logging_steps 1 $flags
  # shellcheck disable=SC2086
  run "rm-$tag" "$STEPS" "$PYTHON" "${WRAP[@]}" rm --model "$MODEL" --data "$OUT/prefs.jsonl" --output "$OUT/rm-$tag" \
      --train.max_steps "$STEPS" --train.max_length "$LENGTH" --train.batch_size 4 --train.logging_steps 1 $flags
  # shellcheck disable=SC2086
  run "dpo-$tag" "$STEPS" "$PYTHON" "${WRAP[@]}" dpo --model "$MODEL" --data "$OUT/prefs.jsonl" --output "$OUT/dpo-$tag" \
      --train.max_steps "$STEPS" --train.max_length "$LENGTH" --train.eval_split 0 --train.logging_steps 1 $flags
  if [[ -f "$OUT/rm-$tag/posttrain.json" ]]; then
    # shellcheck disable=SC2086
    run "ppo-$tag" "$PPO_STEPS" "$PYTHON" "${WRAP[@]}" rlhf --model "$MODEL" --reward-model "$OUT/rm-$tag" --prompts "$OUT/prompts.jsonl" \
        --output "$OUT/ppo-$tag" --ppo.steps "$PPO_STEPS" --rollout.max_new_tokens "$NEW_TOKENS" --ppo.save_steps 0 $flags
    # the critic-free path: no critic adapter or value head, groups of responses per prompt
    # shellcheck disable=SC2086
    run "grpo-$tag" "$PPO_STEPS" "$PYTHON" "${WRAP[@]}" rlhf --algo grpo --model "$MODEL" --reward-model "$OUT/rm-$tag" \
        --prompts "$OUT/prompts.jsonl" --output "$OUT/grpo-$tag" --ppo.steps "$PPO_STEPS" \
        --rollout.max_new_tokens "$NEW_TOKENS" --ppo.save_steps 0 $flags
  else
    FAILED=1; printf "ppo-%s\tFAILED (no reward model)\t-\t-\n" "$tag" >> "$RESULTS"
  fi
done

# PPO on 2 processes: 2 GPUs, or 2 CPU processes on gloo in the smoke mode
if [[ "$GPUS" -ge 2 || "$MODE" == cpu-smoke ]]; then
  if [[ -f "$OUT/rm-bf16/posttrain.json" ]]; then
    run "ppo-2proc" "$PPO_STEPS" "$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no -m posttrain.cli rlhf --model "$MODEL" --reward-model "$OUT/rm-bf16" \
        --prompts "$OUT/prompts.jsonl" --output "$OUT/ppo-2proc" --ppo.steps "$PPO_STEPS" \
        --rollout.max_new_tokens "$NEW_TOKENS" --ppo.save_steps 0
  fi
else
  echo "--- ppo-2proc: skipped (1 GPU)"
  printf "ppo-2proc\tskipped (1 GPU)\t-\t-\n" >> "$RESULTS"
  # one GPU: the loop's collectives forced through a one-rank NCCL group instead (scripts/gpu_collectives.py)
  if [[ -f "$OUT/rm-bf16/posttrain.json" ]]; then
    run "ppo-nccl" "$PPO_STEPS" "$PYTHON" -m torch.distributed.run --nproc_per_node 1 scripts/gpu_collectives.py rlhf \
        --model "$MODEL" --reward-model "$OUT/rm-bf16" --prompts "$OUT/prompts.jsonl" --output "$OUT/ppo-nccl" \
        --ppo.steps "$PPO_STEPS" --rollout.max_new_tokens "$NEW_TOKENS" --ppo.save_steps 0
  fi
fi

echo
echo "gpu_check results ($MODE, $(date +%Y-%m-%d)):"
column -t -s $'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
if [[ "$FAILED" -ne 0 ]]; then
  echo "gpu_check: some runs FAILED; their logs are in $OUT" >&2
  exit 1
fi
echo "gpu_check: all runs passed"
