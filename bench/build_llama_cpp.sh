#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` natively from a source checkout, as the native peer that
# bench/infer.py times against Tandem (`--llama-bench PATH`). The build is Release, static,
# -march=native (GGML_NATIVE=ON), without libcurl or anything else that needs the network or
# packages beyond Debian 12's compiler, CMake and Ninja; only the llama-bench target (and the
# libraries it links) is compiled. Source and build folders stay outside this repository.
#
#   bash bench/build_llama_cpp.sh SRC_DIR [BUILD_DIR]     (BUILD_DIR defaults to SRC_DIR/build-native)
#
# The numbers in docs/serving.md were measured with llama.cpp at LLAMA_CPP_COMMIT; another
# commit builds too, with a warning. The last line printed is the path of the llama-bench binary.
set -euo pipefail

LLAMA_CPP_COMMIT=c392e5094deaf2d1a7c18683214f007fad3fe42b
JOBS=${JOBS:-2}

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: bash bench/build_llama_cpp.sh SRC_DIR [BUILD_DIR]" >&2
  exit 1
fi
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
if [[ ! -f "$1/CMakeLists.txt" ]]; then
  echo "error: $1: not a llama.cpp source folder (no CMakeLists.txt)" >&2
  exit 1
fi
src=$(cd "$1" && pwd -P)
if [[ ! -f "$src/examples/llama-bench/llama-bench.cpp" && ! -f "$src/tools/llama-bench/llama-bench.cpp" ]]; then
  echo "error: $src: no examples/llama-bench/ or tools/llama-bench/; is it llama.cpp?" >&2
  exit 1
fi
build=$(realpath -m "${2:-$src/build-native}")
for d in "$src" "$build"; do
  case "$d/" in
    "$repo_root"/*)
      echo "error: $d is inside this repository ($repo_root); use a folder outside it" >&2
      exit 1 ;;
  esac
done
mkdir -p "$build"

# The pinned commit: a git checkout at another HEAD is built anyway, with a warning.
top=$(git -C "$src" rev-parse --show-toplevel 2>/dev/null || true)
if [[ -n "$top" && "$(cd "$top" && pwd -P)" == "$src" ]]; then
  head=$(git -C "$src" rev-parse HEAD)
  if [[ "$head" != "$LLAMA_CPP_COMMIT" ]]; then
    echo "warning: $src is at $head, not the pinned commit $LLAMA_CPP_COMMIT;" \
         "its numbers may differ from the documented ones" >&2
  else
    echo "llama.cpp source: $src at the pinned commit $LLAMA_CPP_COMMIT"
  fi
else
  echo "note: $src is not a git checkout, so its commit cannot be checked; taking it as" \
       "$LLAMA_CPP_COMMIT (llama-bench will report build_commit \"unknown\")"
fi

# LLAMA_BUILD_EXAMPLES is needed where llama-bench lives under examples/ (as at the pinned
# commit), LLAMA_BUILD_TOOLS where it lives under tools/; CMake ignores the one it lacks.
nice -n 10 cmake -S "$src" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=ON \
  -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=OFF \
  -DGGML_CCACHE=OFF \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  --no-warn-unused-cli
nice -n 10 cmake --build "$build" --target llama-bench -- -j"$JOBS"

bin="$build/bin/llama-bench"
if [[ ! -x "$bin" ]]; then
  echo "error: the build finished but $bin is missing" >&2
  exit 1
fi
echo "$bin"
