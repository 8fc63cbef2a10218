#!/usr/bin/env bash
# Trains the same model and batch in Tandem and in PyTorch, alternating, several rounds, and
# prints each side's median tokens/s and their ratio. PyTorch gets its best kernels on this
# CPU: Debian's OpenBLAS would detect a CPU newer than its table as Prescott (SSE3), so
# OPENBLAS_CORETYPE is set for it to the core Tandem chose from the CPU's features (or to
# TORCH_CORETYPE). PyTorch also gets its best threading: Debian's OpenBLAS keeps its own pthread
# pool beside PyTorch's OpenMP one, whose threads spin after each parallel region and take the
# cores from OpenBLAS's (about 1.6x slower on 2 cores). Each round runs PyTorch three ways (its
# defaults; OMP_WAIT_POLICY=PASSIVE; one intra-op thread with OpenBLAS on all of them) and the
# ratio is taken against the fastest way's median. Both sides print the kernels they ran.
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
# PyTorch's ways to run: name | intra-op threads | environment.
ways=("defaults|$threads|"
      "omp-passive|$threads|OMP_WAIT_POLICY=PASSIVE"
      "intra-op-1|1|OPENBLAS_NUM_THREADS=$threads")
[ "$threads" -gt 1 ] || ways=("defaults|1|")
declare -A p_res
t_res=()
result() { sed -n 's/^RESULT tokens_per_s=\([0-9.]*\).*/\1/p'; }
for r in $(seq "$rounds"); do
  out=$($bin "$config" --threads "$threads" --steps "$steps" "$@")
  echo "$out"
  t_res+=("$(echo "$out" | result)")
  for w in "${ways[@]}"; do
    IFS='|' read -r name nt envs <<<"$w"
    out=$(env OPENBLAS_CORETYPE="$core" $envs /usr/bin/python3 bench/torch_train.py "$config" \
            --threads "$nt" --steps "$steps" "$@")
    echo "[pytorch $name] $out"
    p_res[$name]="${p_res[$name]:-} $(echo "$out" | result)"
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tm=$(median "${t_res[@]}")
pm=0; best=
for w in "${ways[@]}"; do
  name=${w%%|*}
  # shellcheck disable=SC2086
  m=$(median ${p_res[$name]})
  echo "pytorch $name: median $m tok/s (rounds:${p_res[$name]})"
  if awk -v a="$m" -v b="$pm" 'BEGIN{exit !(a>b)}'; then pm=$m; best=$name; fi
done
echo "tandem: median $tm tok/s (rounds: ${t_res[*]})"
echo "== $config ($rounds rounds, $threads threads): tandem ${tm} tok/s, pytorch ${pm} tok/s ($best), ratio $(awk -v a="$tm" -v b="$pm" 'BEGIN{printf "%.2f", a/b}')x"
