#!/usr/bin/env bash
# Builds the request-parsing fuzzer with clang (libFuzzer, AddressSanitizer, UBSan) and runs it
# for a bounded time: tests/fuzz/run.sh [SECONDS] [BUILD_DIR]. Exit 0 when nothing was found.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=${2:-build/fuzz}
mkdir -p "$out/corpus"
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Isrc tests/fuzz/fuzz_request.cpp src/tandem/serve/protocol.cpp src/tandem/data/chat.cpp \
  -o "$out/fuzz_request"
# The checked-in seeds plus whatever earlier runs found (kept in the build tree).
"$out/fuzz_request" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$out/" \
  "$out/corpus" tests/fuzz/corpus 2>&1 | tail -n 12
