#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing and builds (scripts/setup.sh, a no-op
# when everything is in place), then ctest with the unit, model and slow labels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j2 "$@"
