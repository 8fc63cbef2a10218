#!/usr/bin/env bash
# Runs the test suite: installs what is missing and builds (scripts/setup.sh, a no-op when
# everything is in place), then ctest with the unit, model and slow labels, about 10 minutes
# on 2 cores. `--long` runs the tests labelled `long` instead (the reasoning pipeline, about
# 8 minutes); CI runs both. Other arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
select=(-LE long)
if [[ "${1:-}" == "--long" ]]; then
  select=(-L long)
  shift
fi
bash scripts/setup.sh
# ctest runs two tests at a time on 2 cores, and most of them start OpenMP processes. Spinning
# idle threads of one take the cores from the other (two concurrent tiny trainings: 152 s
# with libgomp's default, 37 s passive); a lone process trains as fast either way, and the
# bits do not depend on it.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ctest --test-dir build --output-on-failure -j2 "${select[@]}" "$@"
