#!/usr/bin/env bash
# Builds Tandem and runs the whole test suite (ctest: unit, model and slow labels).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${TANDEM_CMAKE_ARGS:-}
ninja -C build
ctest --test-dir build --output-on-failure -j2 "$@"
