#!/usr/bin/env bash
# The GPU check of the performance issue, as ONE script (at most 9.6 min of time limits on an H100/H200;
# give the device call timeout_s=600; the machine's start is not counted).
#   bash benchmarks/gpu_check.sh          (QUICK=1: a seconds-long dry run, here or anywhere)
# The lent machines of this workplace have jax/flax/optax/orbax but not ml_collections: carry its wheel
# (pip download --no-deps ml_collections==1.1.0 -d .whl) and start the command with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/ml_collections*.whl && export PYTHONPATH=/tmp/site;
# Writes JSON (and env.txt) into $OUT (default benchmarks/results/gpu); every benchmark rewrites its JSON
# after each measured point, so one cut short by its time limit keeps what it measured.
# Budget: on the H200 of 2026-11-28 every distinct jitted program took ~20-30 s to compile and autotune
# (XLA:GPU), so the order below puts the issue's targets first and keeps the program count small:
#   1. fp32 train step, Criteo shape, batch 10,000: the group (nn.vmap on GPU) at K = 1, 3, 10, 32, 64,
#      then the Python-loop variant at K = 3, 10 and the GEMM ceiling at K = 10;
#   2. bf16 compute (params and optimizer state stay fp32): the group at K = 10, 64;
#   3. prediction latency, K=10 ensemble vs one student, batch 10,000 then 256 and 1;
#   4. KDEF_Latest (IPNN + FINAL + ECN, 4 cross layers, batch 4096): training, then latency per student.
# Keep XLA's autotuner on: with --xla_gpu_autotune_level=0 the K=10 bf16 step ran 6x slower (24 ms vs ~4 ms).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if [ "${QUICK:-0}" = 1 ]; then
  KS="1 3"; LOOPKS="1"; GEMMK="3"; BFKS="3"; BATCH=512; LBATCH=256; LATB="256 1"
  STEPS="--steps 2 --rounds 1 --warmup 1"
else
  KS="1 3 10 32 64"; LOOPKS="3 10"; GEMMK="10"; BFKS="10 64"; BATCH=10000; LBATCH=4096; LATB="10000 256 1"
  STEPS="--steps 20 --rounds 3 --warmup 2"
fi
LATEST="--students ipnn:1,final:1,ecn:1 --set model.ecn.num_cross_layers=4"
{
  date -u
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
} 2>&1 | tee "$OUT/env.txt"
status=0
run() { local t=$1; shift; echo "+ $*"; timeout "$t" "$PY" "$@" | grep -v '^ \|^{\|^}' || { echo "FAILED or cut short: $*"; status=1; }; }
TT=benchmarks/train_throughput.py
run 180 $TT --ks $KS --batch $BATCH --variants group $STEPS --out "$OUT/train_fp32.json"
run 110 $TT --ks $LOOPKS --batch $BATCH --variants loop --loop-max-k 64 $STEPS --out "$OUT/train_fp32_loop.json"
run 30 $TT --ks $GEMMK --batch $BATCH --variants gemm $STEPS --out "$OUT/train_fp32_gemm.json"
run 90 $TT --ks $BFKS --batch $BATCH --dtype bfloat16 --variants group $STEPS --out "$OUT/train_bf16.json"
run 60 benchmarks/latency.py --k 10 --batches $LATB --steps 20 --rounds 3 --out "$OUT/latency.json"
run 60 $TT $LATEST --batch $LBATCH --mflop-per-sample 15.08 $STEPS --out "$OUT/train_latest.json"
run 45 benchmarks/latency.py $LATEST --batches $LBATCH --steps 20 --rounds 3 --out "$OUT/latency_latest.json"
exit $status
