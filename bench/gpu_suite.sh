#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, against a build made with -DTANDEM_CUDA=ON:
#   kernels    the backend kernel tests on cuda-fp32 (tests/backend, finite differences)
#   conf       `tandem conformance` on cuda-fp32 and on cuda (bf16 tensor-core matmuls)
#   handoff    train tiny on cuda, resume and generate on the CPU (tests/conformance)
#   resilience the resilience suite (random SIGKILLs end bit-identical, every injected fault
#              recovered) with every run trained on cuda (tests/resilience)
#   bench      training tokens/s and MFU for gpt2-124m and llama-350m (bench/train_step)
#   profile    where a gpt2-124m training step's time goes, per kernel family
#   sanitize   the kernel tests under compute-sanitizer (memcheck, then racecheck)
# Each part writes its log to OUT_DIR/NAME.log; a summary table is printed last. Every command
# gets STEP_LIMIT seconds (default 300).
#   bench/gpu_suite.sh [--build DIR] [--out DIR] [PART ...]      (default: all but profile)
set -u
build=build
out=gpu-suite-out
parts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) parts+=("$1"); shift ;;
  esac
done
[ ${#parts[@]} -eq 0 ] && parts=(kernels conf handoff bench)
mkdir -p "$out"
tandem=$build/src/tandem/tandem
[ -x "$tandem" ] || { echo "gpu_suite: no tandem binary at $tandem" >&2; exit 2; }
summary=()
limit=${STEP_LIMIT:-300}

step() {  # step NAME TIMEOUT_S CMD...: runs CMD with a time limit, logs it, records rc and time
  local name=$1 limit=$2; shift 2
  local t0=$EPOCHREALTIME
  echo "== $name: $*" | tee "$out/$name.log"
  timeout --kill-after=10 "$limit" "$@" >>"$out/$name.log" 2>&1
  local rc=$?
  local dt=$(awk "BEGIN{print $EPOCHREALTIME - $t0}")
  summary+=("$(printf '%-22s rc=%-3d %7.1f s' "$name" "$rc" "$dt")")
  tail -n 25 "$out/$name.log"
}

for p in "${parts[@]}"; do
  case "$p" in
    kernels)
      step kernels-cuda-fp32 "$limit" env TANDEM_TEST_BACKEND=cuda-fp32 \
        "$build/tests/backend/test_backend_kernels" --gtest_brief=1 ;;
    conf)
      # The training check trains tiny on a small generated corpus (tests/resilience/harness.py).
      work=$(mktemp -d)
      TANDEM_BIN=$tandem python3 -c "import sys; sys.path.insert(0, 'tests/resilience')
import harness as h; h.write_config(sys.argv[1] + '/tiny.toml', h.prepare_dataset(sys.argv[1]))" \
        "$work" || { echo "gpu_suite: could not prepare the conformance dataset" >&2; exit 1; }
      for b in cuda-fp32 cuda; do
        step "conformance-$b" "$limit" "$tandem" conformance --backend "$b" --threads 0 \
          --config "$work/tiny.toml" --json "$out/conformance-$b.json"
      done ;;
    handoff)
      step cuda-handoff "$limit" env TANDEM_BIN="$tandem" python3 tests/conformance/test_cuda_handoff.py ;;
    resilience)
      step resilience-cuda "$limit" env TANDEM_BIN="$tandem" TANDEM_TRAIN_BACKEND=cuda CHAOS_STEPS=3000 \
        python3 tests/resilience/test_resilience.py ;;
    bench)  # BENCH_RUNS runs of each (default 3): quote the median
      for c in gpt2-124m llama-350m; do
        for r in $(seq "${BENCH_RUNS:-3}"); do
          step "train-step-$c-$r" "$limit" "$build/bench/train_step" "configs/$c.toml" \
            --backend cuda --steps 10 --warmup 2
        done
      done ;;
    profile)
      step profile-gpt2-124m "$limit" "$build/bench/train_step" configs/gpt2-124m.toml \
        --backend cuda --steps 5 --warmup 1 --profile ;;
    sanitize)
      for tool in memcheck racecheck; do
        step "sanitize-$tool" "$limit" env TANDEM_TEST_BACKEND=cuda-fp32 compute-sanitizer \
          --tool "$tool" --error-exitcode 9 "$build/tests/backend/test_backend_kernels" \
          --gtest_brief=1
      done ;;
    *) echo "gpu_suite: unknown part '$p'" >&2; exit 2 ;;
  esac
done
echo "== summary"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
grep "RESULT\|verdict:\|MFU" "$out"/*.log 2>/dev/null | tee -a "$out/summary.txt"
