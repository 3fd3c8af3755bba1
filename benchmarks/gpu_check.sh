#!/usr/bin/env bash
# The device check of issue 11 §3, in one script: on one GPU, without network, with only PyTorch,
# torchvision, numpy, pandas, matplotlib, jinja2, pyyaml, pytest and tqdm installed, and fastcert
# run from this checkout (not pip-installed). Writes every figure and log to $OUT:
#   a. pytest -m cuda tests/test_cuda.py            -> pytest-cuda.log, pytest-cuda.xml, pytest-cuda.exit
#   b. bench_step.py on CUDA: CIFAR CNN-7 at batch 128 (+ one 50,000-image IBP epoch), MNIST CNN-7
#      at batch 256: clean, IBP, IBP + regularizers, CROWN-IBP with loss fusion; step times,
#      ratios, peak memory                          -> bench-cifar10.json/.log, bench-mnist.json/.log
#   c. Table 1's MNIST CNN-7 cells (Ours, Vanilla IBP; the spec of config/experiments.yaml, real
#      MNIST 60,000/10,000) trained concurrently, then `fastcert verify` (IBP and CROWN-IBP; CPU
#      mode: IBP) of each best checkpoint                             -> runs/<method>/{metrics.jsonl,result.json,...},
#                                                      train-<method>.log, verify-<method>-<m>.json
#   and nvidia-smi.txt, env.txt, status.tsv (each step's exit status) and summary.json.
#
# Usage (repository root):  OUT=/some/dir benchmarks/gpu_check.sh
# Environment:
#   GPU_CHECK_MODE=cpu  a < 60 s CPU rehearsal (tiny sizes, synthetic MNIST; tests/test_gpu_check.py)
#   EPOCHS=N            training epochs (default: the paper's 70; other values stretch the schedule
#                       proportionally and summary.json marks it "paper_schedule": false)
#   TOTAL_BUDGET_S=S    the whole check's wall-clock target (default 450 s on GPU, 8 minutes with margin)
#   TRAIN_BUDGET_S=S    wall-clock budget of the two training runs (default: what TOTAL_BUDGET_S leaves
#                       after the tests and benchmarks, minus 75 s for verification): at the budget
#                       they get SIGTERM, save their last completed epoch and stop (status
#                       "interrupted"); verification then uses the best checkpoint so far
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

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the exit status
    local name=$1 started=$SECONDS
    shift
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%ss\n' "$name" "$rc" "$((SECONDS - started))" | tee -a "$OUT/status.tsv"
    return $rc
}

if [ "$MODE" = cpu ]; then
    DEVICE=cpu; TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-300}
    [ "$EPOCHS" = 70 ] && EPOCHS=2
    export OMP_NUM_THREADS=1  # several processes at once on a shared CPU
    BENCH=(--device cpu --threads 1 --warmup 1 --repeats 2 --width 0.0625)
    CIFAR_BATCH=4; MNIST_BATCH=4; EPOCH_IMAGES=8; MEMORY=()
    SPEC_FLAGS=(--cpu); BOUNDS=(ibp)
else
    DEVICE=cuda; TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-450}
    BENCH=(--device cuda --warmup 3 --repeats 10)
    CIFAR_BATCH=128; MNIST_BATCH=256; EPOCH_IMAGES=50000; MEMORY=(--memory)
    SPEC_FLAGS=(); BOUNDS=(ibp crown-ibp)
fi

{ date -u; echo "mode $MODE, epochs $EPOCHS, total budget ${TOTAL_BUDGET_S}s"; git -C "$REPO" rev-parse HEAD 2>/dev/null
  "$PY" -c 'import torch, sys; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
  "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
} > "$OUT/env.txt" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >> "$OUT/nvidia-smi.txt"

# a. the cuda tests (only that file: the others import hypothesis; without pytest-timeout the
#    `timeout` ini option only warns)
timeout -k 10 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$OUT/pytest-cuda.xml" tests/test_cuda.py \
    > "$OUT/pytest-cuda.log" 2>&1
echo $? > "$OUT/pytest-cuda.exit"
printf 'pytest-cuda\t%s\n' "$(cat "$OUT/pytest-cuda.exit")" | tee -a "$OUT/status.tsv"

# b. step benchmarks at the paper's batch sizes
STEPS=(--steps clean ibp ibp+reg crown-ibp)
step bench-cifar10 timeout -k 10 150 "$PY" benchmarks/bench_step.py --dataset cifar10 --batch "$CIFAR_BATCH" "${BENCH[@]}" "${STEPS[@]}" \
    --epoch-images "$EPOCH_IMAGES" "${MEMORY[@]}" --json "$OUT/bench-cifar10.json"
step bench-mnist timeout -k 10 100 "$PY" benchmarks/bench_step.py --dataset mnist --batch "$MNIST_BATCH" "${BENCH[@]}" "${STEPS[@]}" \
    "${MEMORY[@]}" --json "$OUT/bench-mnist.json"

# c. Table 1, MNIST CNN-7: Ours and Vanilla IBP side by side on the one device, then verification
step specs "$PY" benchmarks/gpu_check.py specs --out "$OUT/specs" --epochs "$EPOCHS" "${SPEC_FLAGS[@]}"
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-$((TOTAL_BUDGET_S - SECONDS - 75))}
[ "$TRAIN_BUDGET_S" -ge 60 ] || TRAIN_BUDGET_S=60
echo "training budget ${TRAIN_BUDGET_S}s (after ${SECONDS}s)" | tee -a "$OUT/env.txt"
pids=()
for method in ours vanilla; do
    timeout -s TERM -k 60 "$TRAIN_BUDGET_S" "$PY" -m fastcert.run.cli train --spec "$OUT/specs/$method.yaml" \
        --out "$OUT/runs/$method" --device "$DEVICE" --no-progress > "$OUT/train-$method.log" 2>&1 &
    pids+=($!)
done
for i in 0 1; do
    wait "${pids[$i]}"
    printf 'train-%s\t%s\n' "$([ "$i" = 0 ] && echo ours || echo vanilla)" $? | tee -a "$OUT/status.tsv"
done
for method in ours vanilla; do  # the two models' verifications side by side, like their training
    checkpoint="$OUT/runs/$method/checkpoint_best.pt"
    [ -f "$checkpoint" ] || checkpoint="$OUT/runs/$method/checkpoint_last.pt"
    for bound in "${BOUNDS[@]}"; do
        step "verify-$method-$bound" timeout -k 10 120 "$PY" -m fastcert.run.cli verify --checkpoint "$checkpoint" --method "$bound" \
            --device "$DEVICE" --out "$OUT/verify-$method-$bound.json"
    done &
done
wait

step summary "$PY" benchmarks/gpu_check.py summary "$OUT"
cat "$OUT/status.tsv"
