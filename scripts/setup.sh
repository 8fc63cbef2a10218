#!/usr/bin/env bash
# Installs every dependency from Debian's packages (idempotent) and builds Tandem.
# Run as root (or with sudo) on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libsentencepiece-dev sentencepiece libtomlplusplus-dev nlohmann-json3-dev
  clang libclang-rt-14-dev libcli11-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev libomp-dev libssl-dev
  libdnnl2 libgloo-dev bible-kjv python3 python3-torch python3-numpy python3-toml
  chromium libcairo2-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node.js and npm run the end-to-end tests with the official OpenAI client (tests/serve); a
# machine that already has them (from any source) keeps its own.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] installing: nodejs npm"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d tests/serve/node_modules/openai ]; then
  npm ci --prefix tests/serve --no-audit --no-fund --loglevel=error
fi
# llama.cpp as a peer for the GGUF export tests: node-llama-cpp with its prebuilt CPU binaries
# only (its optional CUDA/Vulkan builds are left out; nothing is compiled). `npm install`, not
# `npm ci`: npm leaves other platforms' optional packages out of the lock file, which `ci`
# then rejects; the versions are pinned exactly in package.json.
if [ ! -d tests/export/node_modules/@node-llama-cpp/linux-x64 ]; then
  npm install --prefix tests/export --no-audit --no-fund --loglevel=error --omit=optional \
    --ignore-scripts
fi

# The dashboard's charting library (uPlot), built into the binary: the page works offline.
if [ ! -d src/tandem/dashboard/web/node_modules/uplot ]; then
  npm ci --prefix src/tandem/dashboard/web --no-audit --no-fund --loglevel=error
fi
# The dashboard's browser tests drive Debian's chromium with puppeteer-core.
if [ ! -d tests/dashboard/node_modules/puppeteer-core ]; then
  npm ci --prefix tests/dashboard --no-audit --no-fund --loglevel=error
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${TANDEM_CMAKE_ARGS:-}
ninja -C build
