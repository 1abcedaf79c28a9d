#!/usr/bin/env bash
# The GPU check of the performance issue, as ONE script (< 8 min on an H100/H200):
#   train throughput, Criteo shape, batch 10,000: K = 1, 3, 10, 32, 64 in fp32 (the group = nn.vmap on GPU, vs Python loop
#   vs GEMM ceiling) and in bf16 compute (params/optimizer fp32); prediction latency K=10 vs one student;
#   KDEF_Latest (IPNN + FINAL + ECN, 4 cross layers, batch 4096) training and latency per student.
# Writes JSON (and env.txt) into $OUT (default benchmarks/results/gpu). QUICK=1: a seconds-long dry run.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if [ "${QUICK:-0}" = 1 ]; then
  KS="1 3"; BATCH=512; LBATCH=256; STEPS="--steps 2 --rounds 1 --warmup 1"; LAT="--batches 1 256 --steps 2 --rounds 1"
else
  KS="1 3 10 32 64"; BATCH=10000; LBATCH=4096; STEPS="--steps 20 --rounds 3 --warmup 3"; LAT="--batches 1 256 10000 --steps 50 --rounds 3"
fi
LATEST="--students ipnn:1,final:1,ecn:1 --set model.ecn.num_cross_layers=4"
{
  date -u
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
} 2>&1 | tee "$OUT/env.txt"
status=0
run() { local t=$1; shift; echo "+ $*"; timeout "$t" "$PY" "$@" || { echo "FAILED ($?): $*"; status=1; }; }
run 200 benchmarks/train_throughput.py --ks $KS --batch $BATCH --variants group loop gemm --loop-max-k 10 $STEPS --out "$OUT/train_fp32.json"
run 120 benchmarks/train_throughput.py --ks $KS --batch $BATCH --dtype bfloat16 --variants group gemm $STEPS --out "$OUT/train_bf16.json"
run 45 benchmarks/latency.py --k 10 $LAT --out "$OUT/latency.json"
run 60 benchmarks/train_throughput.py $LATEST --batch $LBATCH --mflop-per-sample 15.08 $STEPS --out "$OUT/train_latest.json"
run 40 benchmarks/latency.py $LATEST --batches $LBATCH --steps 20 --rounds 3 --out "$OUT/latency_latest.json"
exit $status
