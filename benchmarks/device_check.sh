#!/usr/bin/env bash
# One prepared run on a GPU machine (see ../shared/design/DEVICE.md): every stage under
# its own timeout, every result written under OUT as it comes, so that a run stopped at
# its time limit keeps what it wrote. The stage limits add up to 8 minutes (the device
# budget is 15, start-up and transfers included); reproduce gets what is left.
#
#   bash benchmarks/device_check.sh OUT          # the full check (a GPU machine)
#   SMOKE=1 bash benchmarks/device_check.sh OUT  # every stage at its smallest size (CPU)
#
# It runs from the source tree (PYTHONPATH, no install, no network) with the machine's
# preinstalled JAX stack; stages whose optional packages are missing say so and go on.
set -u
OUT=${1:?usage: device_check.sh OUT}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # pytest workers and torch share the GPU
export JAXMIRROR_CACHE_DIR="$OUT/xla-cache"  # the second demo run reuses the first's
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}

stage() {  # stage NAME SECONDS COMMAND...: run, time, and log one stage
  local name=$1 limit=$(($2 * LIMIT_SCALE))
  shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
  local rc=$?
  echo "   rc=$rc, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

# The limits are sized for the GPU budget; a smoke run on a (possibly shared) CPU gets
# ten times as long, since it checks that every stage works, not how fast.
LIMIT_SCALE=1
if [ "$SMOKE" = 1 ]; then
  LIMIT_SCALE=10
  # The test stages only collect here: the suite runs these tests itself.
  TESTS=(tests/test_deep_pairs.py --collect-only)
  KERNEL_TESTS=(tests/test_flow_kernel.py --collect-only)
  SWEEP=(benchmarks/sweep.py --preset smoke --t1 20)
  DISCRETE=(benchmarks/discrete_speed.py --configs 8 --steps 200 --loop-configs 1 --kernel on
    --loop-steps 20 --dtype float64)
  FIRST_CALL=(benchmarks/first_call.py --rounds 1 --configs 16)
  DEMO=(-c "import jax; jax.config.update('jax_enable_x64', True)
from jaxmirror import demo; r = demo.run(t1=300.0); print(r['rows'])")
  SCALE=tiny
  REPRODUCE=(range:30)
else
  TESTS=(tests/test_solve.py tests/test_deep_pairs.py tests/test_implicit_bias.py
    tests/test_legendre.py tests/test_gradients.py tests/test_matrix.py
    tests/test_discrete.py tests/test_schedules.py)
  # The kernels compiled for the GPU (Triton), against the XLA path.
  KERNEL_TESTS=(tests/test_kernels.py tests/test_flow_kernel.py)
  SWEEP=(benchmarks/sweep.py --preset gpu)
  DISCRETE=(benchmarks/discrete_speed.py --configs 65536 --steps 20000)
  # The first call of a new sweep shape in a fresh process, the cache warm (target:
  # at most 2 s): three processes, the first of which fills the cache.
  FIRST_CALL=(benchmarks/first_call.py --rounds 2 --configs 512)
  DEMO=(-m jaxmirror.demo --out "$OUT/demo.png")
  SCALE=full
  # Every experiment of `reproduce all`, one stage each (its own limit: a slow one no
  # longer stops the rest), cheapest first by their 2-core CPU costs at --scale full
  # (benchmarks/RESULTS.md: range 11 s, lora 27 s, attention 32 s, positional 39 s,
  # deep 75 s; sparse, matrix and vit over 7 min). Limits sum to the 135 s left.
  REPRODUCE=(range:10 lora:15 attention:15 positional:15 deep:20 sparse:30 matrix:15
    vit:15)
fi

stage environment 20 "$PYTHON" -c "
import jax, jaxmirror
print('jaxmirror', jaxmirror.__version__, '| jax', jax.__version__)
print('devices', jax.devices())"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
stage tests 40 "$PYTHON" -m pytest -q -p no:benchmark -o addopts="" -x "${TESTS[@]}"
stage kernel_tests 35 "$PYTHON" -m pytest -q -p no:benchmark -o addopts="" "${KERNEL_TESTS[@]}"
stage sweep_benchmark 105 "$PYTHON" "${SWEEP[@]}"
stage discrete_benchmark 35 "$PYTHON" "${DISCRETE[@]}"
stage first_call 40 "$PYTHON" "${FIRST_CALL[@]}"
# Twice, in fresh processes: the second one's compilations come from the cache.
stage demo_first 40 "$PYTHON" "${DEMO[@]}"
stage demo_second 30 "$PYTHON" "${DEMO[@]}"
for item in "${REPRODUCE[@]}"; do  # NAME:SECONDS
  stage "reproduce_${item%%:*}" "${item##*:}" "$PYTHON" -m jaxmirror.cli reproduce \
    "${item%%:*}" --scale "$SCALE" --out "$OUT/reproduce"
done
echo "done: $OUT/summary.txt" | tee -a "$OUT/summary.txt"
