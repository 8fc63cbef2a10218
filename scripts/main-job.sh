#!/usr/bin/env bash
# The default job: prepare the KJV corpus, train the tiny config, sample from the checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
TANDEM=./build/src/tandem/tandem

if [ ! -f data/kjv/dataset.json ]; then
  mkdir -p data
  # Verse text without the leading reference ("Ge1:1 ").
  bible -f "Gen1:1-Rev22:21" | sed 's/^[^ ]* //' > data/kjv.txt
  $TANDEM data prepare --input data/kjv.txt --out data/kjv --vocab-size 4096
fi
if [ -d runs/tiny ]; then
  $TANDEM train configs/tiny.toml --resume
else
  $TANDEM train configs/tiny.toml
fi

echo
$TANDEM generate --checkpoint runs/tiny --prompt "And God said" --max-tokens 60 \
  --temperature 0.8 --top-k 40 --seed 1
