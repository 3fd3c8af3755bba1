#!/usr/bin/env bash
# The device check of issues 11 §3 and 24, in one script: on one GPU, without network, with only
# PyTorch, torchvision, numpy, pandas, matplotlib, jinja2, pyyaml, pytest and tqdm installed, and
# fastcert run from this checkout (not pip-installed). Writes every figure and log to $OUT:
#   0. the device: CUDA available                   -> cuda.log
#   a. pytest -m cuda tests/test_cuda.py            -> pytest-cuda.log, pytest-cuda.xml, pytest-cuda.exit
#   b. bench_step.py on CUDA (float32): CIFAR CNN-7 at batch 128 (+ one 50,000-image IBP epoch),
#      MNIST CNN-7 at batch 256: clean, IBP, IBP + regularizers, CROWN-IBP with loss fusion; step
#      times, ratios, peak memory                   -> bench-cifar10.json/.log, bench-mnist.json/.log
#   c. gpu_probe.py: syncs per training batch, kernels per step and GPU busy fraction at batch 256
#      vs 1024, TF32 on/off, cudnn.benchmark on/off -> probe.json/.log; 1, 2 and 4 training
#      processes side by side                       -> per-gpu-<k>-<i>.json/.log
#   d. Table 1's MNIST CNN-7 cells (Ours, Vanilla IBP; the spec of config/experiments.yaml, real
#      MNIST 60,000/10,000) trained concurrently (GPU utilization sampled -> gpu-busy.csv), then
#      `fastcert verify` (IBP and CROWN-IBP; CPU mode: IBP) of each best checkpoint, and of Ours
#      with IBP on the CPU too                      -> runs/<method>/{metrics.jsonl,result.json,...},
#                                                      train-<method>.log, verify-<method>-<m>[-cpu].json
#   and nvidia-smi.txt, env.txt, status.tsv (each step's exit status and seconds) and summary.json.
# Exits 1 and names the failed steps when any step failed (a training run stopped at its budget,
# status "interrupted", has not failed); summary.json is written from whatever finished.
#
# Usage (repository root):  OUT=/some/dir benchmarks/gpu_check.sh
# Environment:
#   GPU_CHECK_MODE=cpu  a CPU rehearsal (tiny sizes, synthetic MNIST; tests/test_gpu_check.py)
#   EPOCHS=N            training epochs (default: the paper's 70; other values stretch the schedule
#                       proportionally and summary.json marks it "paper_schedule": false)
#   TOTAL_BUDGET_S=S    the whole check's worst-case wall-clock time (default 480 s on GPU)
#   TRAIN_BUDGET_S=S    wall-clock budget of the two training runs (default on GPU: what
#                       TOTAL_BUDGET_S leaves after the steps before training and the limits of
#                       those after it; CPU: 300 s): at the budget they get SIGTERM, save their
#                       last completed epoch and stop (status "interrupted"); verification then
#                       uses the best checkpoint so far
#   FASTCERT_DATA       data root holding MNIST/raw/*.gz (default: data/mnist-carry, see README)
#   PYTHON              interpreter (default: python, else python3)
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
: "${OUT:?set OUT to the output directory}"
MODE=${GPU_CHECK_MODE:-gpu}
PY=${PYTHON:-$(command -v python || command -v python3)}
EPOCHS=${EPOCHS:-70}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export FASTCERT_DATA=${FASTCERT_DATA:-$REPO/data/mnist-carry}
mkdir -p "$OUT/runs"
cd "$REPO" || exit 1
: > "$OUT/status.tsv"

record() {  # record NAME STATUS STARTED: one line of status.tsv (name, exit status, seconds)
    printf '%s\t%s\t%ss\n' "$1" "$2" "$((SECONDS - $3))" | tee -a "$OUT/status.tsv"
}

step() {  # step NAME SECONDS COMMAND...: run under a time limit, log to $OUT/NAME.log, record the status
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    timeout -k "$KILL_S" "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    record "$name" "$rc" "$started"
    return $rc
}

# Each step's limit in seconds (a step that ignores SIGTERM gets KILL_S more). In GPU mode the
# limits before training add up to 301 s (env.txt and nvidia-smi.txt included) and those after it
# to 122 s; training gets what TOTAL_BUDGET_S leaves (at least 54 s), so the check ends within 480 s.
KILL_S=3
if [ "$MODE" = cpu ]; then
    DEVICE=cpu; TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-900}
    [ "$EPOCHS" = 70 ] && EPOCHS=2
    export OMP_NUM_THREADS=1  # several processes at once on a shared CPU
    BENCH=(--device cpu --threads 1 --warmup 1 --repeats 2 --width 0.0625)
    CIFAR_BATCH=4; MNIST_BATCH=4; EPOCH_IMAGES=8; MEMORY=()
    PROBE=(--device cpu --width 0.0625 --batches 4 8 --steps 1)
    SPEC_FLAGS=(--cpu); BOUNDS=(ibp)
    LIMIT_CUDA=30 LIMIT_TESTS=90 LIMIT_BENCH=120 LIMIT_PROBE=180 LIMIT_PER_GPU=240 LIMIT_SPECS=60
    LIMIT_VERIFY=90 LIMIT_CPU_VERIFY=90 LIMIT_SUMMARY=60
else
    DEVICE=cuda; TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-480}
    BENCH=(--device cuda --warmup 3 --repeats 10)
    CIFAR_BATCH=128; MNIST_BATCH=256; EPOCH_IMAGES=50000; MEMORY=(--memory)
    PROBE=(--device cuda)
    SPEC_FLAGS=(); BOUNDS=(ibp crown-ibp)
    LIMIT_CUDA=15 LIMIT_TESTS=70 LIMIT_BENCH=35 LIMIT_PROBE=45 LIMIT_PER_GPU=40 LIMIT_SPECS=15
    LIMIT_VERIFY=30 LIMIT_CPU_VERIFY=40 LIMIT_SUMMARY=10
fi

{ date -u; echo "mode $MODE, epochs $EPOCHS, total budget ${TOTAL_BUDGET_S}s"; git -C "$REPO" rev-parse HEAD 2>/dev/null
  echo "NVIDIA_TF32_OVERRIDE=${NVIDIA_TF32_OVERRIDE-unset}"
  timeout 15 "$PY" -c 'import torch, sys; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
  "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
} > "$OUT/env.txt" 2>&1
timeout 10 nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >> "$OUT/nvidia-smi.txt"

# 0. the device itself: without CUDA every GPU figure below is missing, and the check says so
if [ "$MODE" = cpu ]; then
    step cuda "$LIMIT_CUDA" "$PY" -c 'print("cpu rehearsal: CUDA not required")'
else
    step cuda "$LIMIT_CUDA" "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
fi

# a. the cuda tests (only that file: the others import hypothesis; without pytest-timeout the
#    `timeout` ini option only warns)
step pytest-cuda "$LIMIT_TESTS" "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$OUT/pytest-cuda.xml" \
    tests/test_cuda.py
echo $? > "$OUT/pytest-cuda.exit"

# b. step benchmarks at the paper's batch sizes, in the paper's float32 (bench_step.py's default)
STEPS=(--steps clean ibp ibp+reg crown-ibp)
step bench-cifar10 "$LIMIT_BENCH" "$PY" benchmarks/bench_step.py --dataset cifar10 --batch "$CIFAR_BATCH" "${BENCH[@]}" \
    "${STEPS[@]}" --epoch-images "$EPOCH_IMAGES" "${MEMORY[@]}" --json "$OUT/bench-cifar10.json"
step bench-mnist "$LIMIT_BENCH" "$PY" benchmarks/bench_step.py --dataset mnist --batch "$MNIST_BATCH" "${BENCH[@]}" \
    "${STEPS[@]}" "${MEMORY[@]}" --json "$OUT/bench-mnist.json"

# c. what a first GPU run must measure (benchmarks/README.md): syncs per batch, kernels per step and
#    GPU busy fraction at batch 256 vs 1024, TF32 on/off, cudnn.benchmark on/off ...
step probe "$LIMIT_PROBE" "$PY" benchmarks/gpu_probe.py "${PROBE[@]}" --json "$OUT/probe.json"
# ... and 1, 2 and 4 training processes sharing the device (MNIST CNN-7 IBP steps, side by side)
per_gpu() {
    local k=$1 pids=() i rc=0
    for i in $(seq 1 "$k"); do
        "$PY" benchmarks/bench_step.py --dataset mnist --batch "$MNIST_BATCH" "${BENCH[@]}" --steps ibp \
            --json "$OUT/per-gpu-$k-$i.json" > "$OUT/per-gpu-$k-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || rc=$?; done
    return $rc
}
step per-gpu "$LIMIT_PER_GPU" bash -c "$(declare -f per_gpu); $(declare -p PY BENCH MNIST_BATCH OUT); per_gpu 1 && per_gpu 2 && per_gpu 4"

# d. Table 1, MNIST CNN-7: Ours and Vanilla IBP side by side on the one device, then verification
step specs "$LIMIT_SPECS" "$PY" benchmarks/gpu_check.py specs --out "$OUT/specs" --epochs "$EPOCHS" "${SPEC_FLAGS[@]}"
# what must stay for the steps after training: the two verification chains (side by side), the
# CPU verification and the summary, each with its kill margin
AFTER_S=$(( ${#BOUNDS[@]} * (LIMIT_VERIFY + KILL_S) + LIMIT_CPU_VERIFY + LIMIT_SUMMARY + 2 * KILL_S ))
if [ "$MODE" = cpu ]; then TRAIN_DEFAULT_S=300; else TRAIN_DEFAULT_S=$((TOTAL_BUDGET_S - SECONDS - AFTER_S - KILL_S)); fi
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-$TRAIN_DEFAULT_S}
[ "$TRAIN_BUDGET_S" -ge 10 ] || TRAIN_BUDGET_S=10
echo "training budget ${TRAIN_BUDGET_S}s (after ${SECONDS}s; ${AFTER_S}s kept for what follows)" | tee -a "$OUT/env.txt"
timeout $((TRAIN_BUDGET_S + KILL_S)) nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
    > "$OUT/gpu-busy.csv" 2>&1 &  # the device's busy fraction while the two runs train

train() {  # train METHOD: at the budget the run gets SIGTERM, saves its last epoch and stops, which is a success
    local method=$1 started=$SECONDS rc
    timeout -k "$KILL_S" "$TRAIN_BUDGET_S" "$PY" -m fastcert.run.cli train --spec "$OUT/specs/$method.yaml" \
        --out "$OUT/runs/$method" --device "$DEVICE" --no-progress > "$OUT/train-$method.log" 2>&1
    rc=$?
    if [ "$rc" = 124 ] && [ "$("$PY" benchmarks/gpu_check.py status "$OUT/runs/$method" 2>/dev/null)" = interrupted ]; then
        rc=0
    fi
    record "train-$method" "$rc" "$started"
}

methods=(ours vanilla)
for method in "${methods[@]}"; do train "$method" & done
wait
best() {  # the checkpoint to verify: the best one, or the last if no epoch reached eps_max yet
    local run=$OUT/runs/$1
    if [ -f "$run/checkpoint_best.pt" ]; then echo "$run/checkpoint_best.pt"; else echo "$run/checkpoint_last.pt"; fi
}
for method in "${methods[@]}"; do  # the two models' verifications side by side, like their training
    for bound in "${BOUNDS[@]}"; do
        step "verify-$method-$bound" "$LIMIT_VERIFY" "$PY" -m fastcert.run.cli verify --checkpoint "$(best "$method")" \
            --method "$bound" --device "$DEVICE" --out "$OUT/verify-$method-$bound.json"
    done &
done
wait
# the same checkpoint verified on the CPU must give the same counts as on the device
step verify-ours-ibp-cpu "$LIMIT_CPU_VERIFY" "$PY" -m fastcert.run.cli verify --checkpoint "$(best ours)" \
    --method ibp --device cpu --out "$OUT/verify-ours-ibp-cpu.json"

step summary "$LIMIT_SUMMARY" "$PY" benchmarks/gpu_check.py summary "$OUT"
failed=$(awk -F'\t' '$2 != 0 { print $1 }' "$OUT/status.tsv" | tr '\n' ' ')
echo "total ${SECONDS}s"
if [ -n "$failed" ]; then
    echo "gpu_check: FAILED steps: $failed(logs in $OUT)"
    exit 1
fi
echo "gpu_check: every step succeeded"
