#!/usr/bin/env bash
# Trains the same model and batch in Tandem and in PyTorch (PyTorch with its BLAS free to pick
# AVX-512 kernels), alternating, several rounds, and
# prints each side's median tokens/s and their ratio.
#   bench/compare_pytorch.sh CONFIG.toml [ROUNDS] [extra train_step args, e.g. --batch 4 --seq 64]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; rounds=${2:-3}; shift; [ $# -gt 0 ] && shift
threads=${THREADS:-2}
steps=${STEPS:-6}
bin=./build/bench/train_step
[ -x "$bin" ] || { echo "build first: ninja -C build train_step" >&2; exit 1; }
t_res=(); p_res=()
result() { sed -n 's/^RESULT tokens_per_s=\([0-9.]*\).*/\1/p'; }
for r in $(seq "$rounds"); do
  out=$($bin "$config" --threads "$threads" --steps "$steps" "$@")
  echo "$out"
  t_res+=("$(echo "$out" | result)")
  out=$(env -u OPENBLAS_CORETYPE /usr/bin/python3 bench/torch_train.py "$config" \
          --threads "$threads" --steps "$steps" "$@")
  echo "$out"
  p_res+=("$(echo "$out" | result)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tm=$(median "${t_res[@]}"); pm=$(median "${p_res[@]}")
echo "== $config ($rounds rounds, $threads threads): tandem ${tm} tok/s, pytorch ${pm} tok/s, ratio $(awk -v a="$tm" -v b="$pm" 'BEGIN{printf "%.2f", a/b}')x"
