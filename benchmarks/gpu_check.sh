#!/usr/bin/env bash
# The GPU check of the performance issue (parts 1-2 of it: training throughput and prediction latency on
# an H100/H200), in two halves of under 8 min of time limits each, one device call per half on the same
# warm machine (timeout_s=600 each; the machine's start is not counted):
#   PART=1 bash benchmarks/gpu_check.sh   # the train step, group at K = 1, 3, 10, 32, 64 in fp32, K = 10, 64 in bf16
#   PART=2 bash benchmarks/gpu_check.sh   # group and Python loop in one run (K = 3, 10: their ratio), the GEMM
#                                           # ceiling, latency, op profile, KDEF_Latest training
#   PART=open bash benchmarks/gpu_check.sh  # ONE call, what no lease has measured yet, most telling first:
#                                           # a predictor file exported on CPU served on the GPU (when .gpu_carry
#                                           # is carried), the op profile of the predictors, latency at batch 10k
#                                           # (HLO too; BatchNorm-folded predictors too), bf16 K=64, KDEF_Latest training
#   QUICK=1 bash benchmarks/gpu_check.sh  # a dry run of both halves in about a minute, here or anywhere (QUICK=1 PART=open too)
# A lease is 15 min of device time with the machine's start (minutes) counted in, so both halves rarely
# fit in one: the next lease runs PART=open (limits 480 s; timeout_s=570), and PART=1 / PART=2 with what is left.
# PART=all (both halves, 940 s of limits) is for a machine without the 10-minute limit on one call; PART
# must be named (QUICK=1 alone dry-runs both halves).
# Why two halves: XLA:GPU compiles and autotunes every distinct jitted program for 20 s to over a minute
# (H200, 2026-11-28; KDEF_Latest's train step over 90 s), and the checks need ~16 programs. Every
# benchmark prints and records each program's first-call seconds (compile included), and the script
# shares XLA's per-fusion autotuning results between its processes and between the two halves through
# JAX's compilation cache (/tmp/kdef_jax_cache, kept while the machine stays warm).
# The lent machines of this workplace have jax/flax/optax/orbax but not ml_collections: carry its wheel
# (pip download --no-deps ml_collections==1.1.0 -d .whl) and start the command with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/ml_collections*.whl && export PYTHONPATH=/tmp/site;
# and for PART=open also carry .gpu_carry, made here on CPU: python benchmarks/served_file.py --make .gpu_carry
# Writes JSON, env.txt and log.txt (at most 8 files per half) into $OUT (default benchmarks/results/gpu);
# every benchmark rewrites its JSON after each measured point, so one cut short keeps what it measured.
# Keep XLA's autotuner on: with --xla_gpu_autotune_level=0 the K=10 bf16 step ran 6x slower (24 ms vs 2.9 ms).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
PART="${PART:-}"
[ -z "$PART" ] && [ "${QUICK:-0}" = 1 ] && PART=all
case "$PART" in 1|2|open|all) ;; *) echo "PART=${PART:-(unset)}: use 1, 2 or open (one device call each, < 8 min of limits), or all (both halves, ~16 min)" >&2; exit 2;; esac
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1  # the whole log comes back with the JSONs
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/kdef_jax_cache}"
PY="${PYTHON:-python3}"
if [ "${QUICK:-0}" = 1 ]; then
  KS="1 3"; BIGKS="4"; LOOPKS="1"; GEMMK="3"; BFKS="3"; PROFK=3; BATCH=512; LBATCH=256; LATB="256 1"
  STEPS="--steps 2 --rounds 1 --warmup 1"
else
  KS="1 3 10 32"; BIGKS="64"; LOOPKS="3 10"; GEMMK="10"; BFKS="10 64"; PROFK=10; BATCH=10000; LBATCH=4096; LATB="10000 256 1"
  STEPS="--steps 20 --rounds 3 --warmup 2"
fi
LATEST="--students ipnn:1,final:1,ecn:1 --set model.ecn.num_cross_layers=4"
{
  date -u
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "PART=$PART"
} 2>&1 | tee "$OUT/env.txt"
status=0
run() {  # a benchmark under a time limit, its JSON echo filtered out; its own exit status decides (not grep's)
  local t=$1 rc; shift; echo "+ [$(date -u +%T)] $*"
  timeout "$t" "$PY" "$@" | { grep -v '^ \|^{\|^}' || true; }; rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "FAILED or cut short (exit $rc): $*"; status=1; }
}
TT=benchmarks/train_throughput.py
# The checks that PART=2 and PART=open share (their time limit is the first argument of each).
latency() { local t=$1 b=$2; shift 2; run "$t" benchmarks/latency.py --k 10 --batches $b --steps 20 --rounds 3 --out "$OUT/latency.json" --hlo-out "$OUT/latency_hlo.txt" "$@"; }
profile() { local t=$1; shift; run "$t" benchmarks/device_profile.py --k $PROFK --batch $BATCH --calls 10 --out "$OUT/device_profile.json" --programs "$@"; }
latest() { run "$1" $TT $LATEST --batch $LBATCH --mflop-per-sample 15.08 $STEPS --out "$OUT/train_latest.json"; }
if [ "$PART" = 1 ] || [ "$PART" = all ]; then  # limits: 170 + 110 + 180 = 460 s
  run 170 $TT --ks $KS --batch $BATCH --variants group $STEPS --out "$OUT/train_fp32.json"
  run 110 $TT --ks $BIGKS --batch $BATCH --variants group $STEPS --out "$OUT/train_fp32_k64.json"
  run 180 $TT --ks $BFKS --batch $BATCH --dtype bfloat16 --variants group $STEPS --out "$OUT/train_bf16.json"
fi
if [ "$PART" = 2 ] || [ "$PART" = all ]; then  # limits: 160 + 40 + 80 + 50 + 150 = 480 s
  # group and loop interleaved in one process, so group ÷ loop is a ratio of one run (with the GEMM ceiling
  # in the next call: its program is another)
  run 160 $TT --ks $LOOPKS --batch $BATCH --variants group loop --loop-max-k 64 $STEPS --out "$OUT/train_fp32_loop.json"
  run 40 $TT --ks $GEMMK --batch $BATCH --variants gemm $STEPS --out "$OUT/train_fp32_gemm.json"
  latency 80 "$LATB"; profile 50 one_student ensemble train; latest 150
fi
if [ "$PART" = open ]; then  # limits: 20 + 130 + 100 + 90 + 140 = 480 s (timeout_s 570), on a bare machine: every program
  # compiles and autotunes here (20-30 s each on the H200), so the profile skips the train step and latency
  # runs batch 10,000 alone (its 256 and 1 rows were measured in gpu_h200/run3)
  if [ -f .gpu_carry/predictor.jaxexport ]; then run 20 benchmarks/served_file.py --check .gpu_carry --out "$OUT/served_file.json"
  else echo "no .gpu_carry carried: the CPU-exported predictor file is not served here"; fi
  profile 130 one_student ensemble; latency 100 "${LATB%% *}" --fold-bn
  run 90 $TT --ks $BIGKS --batch $BATCH --dtype bfloat16 --variants group $STEPS --out "$OUT/train_bf16_k64.json"
  latest 140
fi
echo "[$(date -u +%T)] done, status $status"
exit $status
