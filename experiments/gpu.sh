#!/bin/bash
# Issue 4's accelerator checks in one call, for a GPU machine without
# TensorFlow (the MNIST arrays come from the .npz cache):
#   1. configs/default.py from scratch to 99% test accuracy (label seeds
#      $SEEDS, default 0),
#      with the GPU's utilisation sampled every second meanwhile;
#   2. experiments/benchmark.py on the GPU: every model and shape, the JAX
#      network step (fixed batch) and the trainer's whole step (on-device
#      sampling and augmentation included), against PyTorch on CUDA.
#
#   MNIST_TEN_CACHE=/path/with/mnist.npz bash experiments/gpu.sh OUT_DIR
#
# A dry run anywhere: TTA_CONFIG=configs/default.py:quick MODELS=lenet
# SHAPES=default REPEATS=2 (nvidia-smi's lines then just fail).
#
# SEEDS="0 1 2" times several label draws; SKIP_BENCH=1 leaves out step 2,
# SKIP_SMOKE=1 the smoke run.
# Outputs in OUT_DIR: gpu_time_to_99_seedN.json, gpu_benchmark.json, their
# logs, every round's log.txt, the utilisation trace, the versions used.
set -u
out=${1:?usage: gpu.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
: "${MNIST_TEN_CACHE:?set MNIST_TEN_CACHE to a folder holding mnist.npz}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import sys, jax, flax, optax, orbax.checkpoint as o; print(sys.version); \
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'orbax', o.__version__); print(jax.devices())"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/versions.txt"

# 0. A short supervised run (training, evaluation, checkpoints) checks that
# the machine's jax/flax/optax/orbax run this code; if not, and
# PINNED_WHEELS names a folder of this project's tested versions' wheels,
# those are installed and it is tried again.
smoke() {
  timeout 180 python3 launch.py --config=configs/supervised.py:quick \
      --workdir="$(mktemp -d)/smoke" > /tmp/smoke.log 2>&1
}
if [ -n "${SKIP_SMOKE:-}" ]; then
  echo "smoke run: skipped"
elif ! smoke; then
  { echo "smoke run failed:"; grep -A12 Traceback /tmp/smoke.log | tail -40; } \
      | tee -a "$out/versions.txt"
  [ -n "${PINNED_WHEELS:-}" ] || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/pinned "$PINNED_WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/pinned${PYTHONPATH:+:$PYTHONPATH}
  echo "retrying with $(ls "$PINNED_WHEELS")" | tee -a "$out/versions.txt"
  smoke || { grep -A12 Traceback /tmp/smoke.log | tail -40; exit 1; }
else
  echo "smoke run: ok ($(grep -o 'done: .*' /tmp/smoke.log | tail -1))"
fi

workdirs=$(mktemp -d)
for seed in ${SEEDS:-0}; do
  nvidia-smi dmon -s u -d 1 -o T >> "$out/gpu_utilisation.txt" 2>&1 &
  dmon=$!
  timeout "${TTA_TIMEOUT:-300}" python3 experiments/benchmark.py \
      --time_to_accuracy="${TTA_CONFIG:-configs/default.py}" --label_seed="$seed" \
      --workdir="$workdirs/$seed" --out="$out/gpu_time_to_99_seed$seed.json" \
      >> "$out/time_to_99.log" 2>&1
  echo "time to 99%, label seed $seed: exit $?"
  kill "$dmon" 2>/dev/null
  # Every round's log, first round first (each earlier round is a pretrain/ deeper).
  logs=() dir="$workdirs/$seed"
  while [ -d "$dir" ]; do logs=("$dir/log.txt" "${logs[@]}"); dir="$dir/pretrain"; done
  for log in "${logs[@]}"; do
    [ -f "$log" ] && cat "$log" >> "$out/rounds_log.txt"
  done
done
grep "reached\|Traceback\|Error:" "$out/time_to_99.log" | tail -8
[ -n "${SKIP_BENCH:-}" ] && exit 0

timeout "${BENCH_TIMEOUT:-240}" python3 experiments/benchmark.py --models="${MODELS:-lenet,resnet}" \
    --shapes="${SHAPES:-supervised,fixmatch,default}" --kernel_grads=xla --repeats="${REPEATS:-50}" \
    --out="$out/gpu_benchmark.json" > "$out/benchmark.log" 2>&1
echo "benchmark: exit $?"
grep "img/step\|/ PyTorch\|USB\|Error" "$out/benchmark.log"
