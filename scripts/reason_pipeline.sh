#!/usr/bin/env bash
# The reasoning pipeline on two CPU cores: pre-train -> SFT -> GRPO on 2-digit addition, with
# held-out exact-match accuracy (200 problems no stage ever trained on) before and after each
# stage. The situation labelling creates: pre-training on unlabelled solved sums (plain text,
# no chat turns), SFT on 300 labelled chats, GRPO on 4,000 prompts whose answers only the
# verifier knows.
#
#   bash scripts/reason_pipeline.sh [--fresh] [--dir DIR] [--no-time-limit]   (after setup)
#
# Writes data/reason-task, data/reason and runs/reason-{pretrain,sft,grpo} under DIR (default:
# the repository root); --fresh replaces them. Configs: configs/reason/{pretrain,sft,grpo}.toml
# (their paths are relative to DIR). TANDEM_BIN overrides the binary. Exits 0 when the targets
# are met, 1 when not.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TANDEM_BIN:-$ROOT/build/src/tandem/tandem}
FRESH=0 DIR=$ROOT TIME_LIMIT=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fresh) FRESH=1; shift ;;
    --dir) DIR=$2; shift 2 ;;
    --no-time-limit) TIME_LIMIT=0; shift ;;  # tests: pass or fail on accuracy alone
    *) echo "error: [pipeline] unknown argument '$1' (expected --fresh, --dir DIR, --no-time-limit)" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
cd "$DIR"
OUTS=(data/reason-task data/reason runs/reason-pretrain runs/reason-sft runs/reason-grpo)
if [[ $FRESH == 1 ]]; then
  rm -rf "${OUTS[@]}"
else
  for d in "${OUTS[@]}"; do
    if [[ -e "$d" ]]; then
      echo "error: [pipeline] $d exists: pass --fresh to replace the pipeline's outputs" >&2
      exit 1
    fi
  done
fi
t0=$(date +%s)
stage() { echo "== $* ($(( $(date +%s) - t0 )) s)" >&2; }
score() {  # held-out exact match of a checkpoint, in percent
  "$BIN" eval -c "$1" --data data/reason-task/rl_val.jsonl --max-tokens 20 --json "$1/heldout.json" \
    | sed -E 's/.*= ([0-9.]+)%.*/\1/'
}

stage "task: 2-digit addition; 300 + 100 SFT chats, 4000 + 200 RL prompts, 25000 documents of solved sums"
"$BIN" data synth --task addition --digits 2 --out data/reason-task --sft-train 300 --sft-val 100 \
  --rl-train 4000 --rl-val 200 --corpus 25000
"$BIN" data prepare -i data/reason-task/corpus.txt -o data/reason --vocab-size 277
stage "pre-training (configs/reason/pretrain.toml)"
"$BIN" train "$ROOT/configs/reason/pretrain.toml"
pre=$(score runs/reason-pretrain)
stage "SFT (configs/reason/sft.toml)"
"$BIN" sft "$ROOT/configs/reason/sft.toml"
sft=$(score runs/reason-sft)
stage "GRPO (configs/reason/grpo.toml)"
"$BIN" grpo "$ROOT/configs/reason/grpo.toml"
grpo=$(score runs/reason-grpo)
total=$(( $(date +%s) - t0 ))

echo
echo "held-out exact match on 200 sums (greedy):"
printf '  %-22s %6s %%\n' "pre-trained" "$pre" "after SFT" "$sft" "after GRPO" "$grpo"
echo "reward curve (GRPO step: mean training reward, held-out):"
/usr/bin/python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("runs/reason-grpo/metrics.jsonl") if l.strip()]
val = {r["step"]: r["val_reward"] for r in rows if "val_reward" in r}
for r in rows:
    if "reward_mean" in r and (r["step"] % 25 == 0 or r["step"] == 1):
        v = f"  held-out {100 * val[r['step']]:.1f} %" if r["step"] in val else ""
        print(f"  step {r['step']:4d}: reward {r['reward_mean']:.3f}{v}")
PY
echo "total ${total} s on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
/usr/bin/python3 - "$pre" "$sft" "$grpo" "$total" "$TIME_LIMIT" <<'PY'
import sys
pre, sft, grpo, total, limit = (float(x) for x in sys.argv[1:])
ok = sft >= pre + 10 and grpo >= sft + 20 and (total <= 20 * 60 or not limit)
print(f"SFT - pre-trained = {sft - pre:+.1f} points (target +10), GRPO - SFT = {grpo - sft:+.1f} "
      f"points (target +20), {total / 60:.1f} min (target <= 20): {'met' if ok else 'NOT met'}")
sys.exit(0 if ok else 1)
PY
