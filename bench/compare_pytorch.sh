#!/usr/bin/env bash
# Trains the same model and batch in Tandem and in PyTorch, alternating, several rounds, and
# prints each side's median tokens/s and their ratio. PyTorch gets its best kernels on this
# CPU: Debian's OpenBLAS would detect a CPU newer than its table as Prescott (SSE3), so
# OPENBLAS_CORETYPE is set for it to the core Tandem chose from the CPU's features (or to
# TORCH_CORETYPE). Both sides print the kernels they ran.
#   bench/compare_pytorch.sh CONFIG.toml [ROUNDS] [extra train_step args, e.g. --batch 4 --seq 64]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; rounds=${2:-3}; shift; [ $# -gt 0 ] && shift
threads=${THREADS:-2}
steps=${STEPS:-6}
bin=./build/bench/train_step
[ -x "$bin" ] || { echo "build first: ninja -C build train_step" >&2; exit 1; }
# The core Tandem picked from this CPU's features, given to PyTorch's OpenBLAS too.
core=${TORCH_CORETYPE:-$($bin "$config" --steps 1 --warmup 0 "$@" | sed -n 's/^kernels: .*gemm openblas core \([A-Za-z0-9]*\).*/\1/p')}
[ -n "$core" ] || { echo "could not read the GEMM core from train_step" >&2; exit 1; }
echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); PyTorch's OPENBLAS_CORETYPE=$core"
t_res=(); p_res=()
result() { sed -n 's/^RESULT tokens_per_s=\([0-9.]*\).*/\1/p'; }
for r in $(seq "$rounds"); do
  out=$($bin "$config" --threads "$threads" --steps "$steps" "$@")
  echo "$out"
  t_res+=("$(echo "$out" | result)")
  out=$(OPENBLAS_CORETYPE="$core" /usr/bin/python3 bench/torch_train.py "$config" \
          --threads "$threads" --steps "$steps" "$@")
  echo "$out"
  p_res+=("$(echo "$out" | result)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tm=$(median "${t_res[@]}"); pm=$(median "${p_res[@]}")
echo "== $config ($rounds rounds, $threads threads): tandem ${tm} tok/s, pytorch ${pm} tok/s, ratio $(awk -v a="$tm" -v b="$pm" 'BEGIN{printf "%.2f", a/b}')x"
