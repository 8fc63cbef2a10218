"""Rollout throughput inside `tandem grpo` against `tandem serve`'s batched throughput on the
same model, and the split of a GRPO step between rollouts and learning.

GRPO side: `tandem grpo CONFIG` for --steps steps; timing.jsonl gives each step's rollout
tokens/s (new tokens over the whole rollout phase: weights to inference form, prefill, decode,
scoring) and its rollout and total seconds. Serve side: `tandem serve` on grpo.init with as
many slots as a GRPO step has sequences, loaded by bench/serve_load with as many streaming
clients, each asking for as many new tokens as GRPO's mean completion. Rounds alternate the two
sides; medians are reported.

  /usr/bin/python3 bench/grpo_rollouts.py [--config configs/reason/grpo.toml] [--steps 20]
                                          [--rounds 3] [--seconds 10]
(run scripts/reason_pipeline.sh first for the default config's checkpoint)
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TANDEM_BIN", os.path.join(ROOT, "build", "src", "tandem", "tandem"))
LOAD = os.path.join(ROOT, "build", "bench", "serve_load")


def grpo_round(config, steps, work, i):
    out = os.path.join(work, f"grpo-{i}")
    subprocess.run([BIN, "grpo", config, "--out-dir", out, "--max-steps", str(steps),
                    "--no-supervise", "--threads", "2"], check=True, capture_output=True, cwd=ROOT)
    t = [json.loads(l) for l in open(os.path.join(out, "timing.jsonl")) if l.strip()]
    m = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
    t = t[1:] if len(t) > 2 else t  # the first step warms caches
    return {"rollout_tps": statistics.median(x["rollout_tokens_per_s"] for x in t),
            "rollout_s": statistics.median(x["rollout_s"] for x in t),
            "step_s": statistics.median(x["step_s"] for x in t),
            "len": statistics.mean(x["completion_len"] for x in m if "completion_len" in x)}


def serve_round(ckpt, slots, new_tokens, seconds):
    proc = subprocess.Popen([BIN, "serve", "-c", ckpt, "--port", "0", "--threads", "2",
                             "--parallel", str(slots), "--model-name", "bench"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        m = re.search(r"http://([\d.]+):(\d+)", proc.stderr.readline())
        out = subprocess.run([LOAD, "--host", m.group(1), "--port", m.group(2), "--streams",
                              str(slots), "--seconds", str(seconds), "--max-tokens",
                              str(new_tokens)], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)["tokens_per_s"]
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/reason/grpo.toml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    with open(os.path.join(ROOT, a.config), "rb") as f:
        cfg = tomllib.load(f)
    g = cfg["grpo"]
    slots = g.get("group_size", 8) * g.get("prompts_per_step", 16)
    ckpt = os.path.join(ROOT, g["init"])
    info = subprocess.run([BIN, "info", os.path.join(ROOT, a.config)], capture_output=True,
                          text=True).stdout
    kernels = next((l[len("backend: "):] for l in info.splitlines() if l.startswith("backend: ")),
                   "unknown")
    print(f"kernels (both sides: the same binary and CPU backend): {kernels}")
    print(f"model {ckpt}; {slots} sequences per GRPO step; {a.rounds} rounds")
    work = tempfile.mkdtemp(prefix="tandem-grpo-bench-")
    gr, sv = [], []
    for i in range(a.rounds):
        r = grpo_round(a.config, a.steps, work, i)
        gr.append(r)
        s = serve_round(ckpt, slots, max(1, round(r["len"])), a.seconds)
        sv.append(s)
        print(f"round {i + 1}: grpo rollouts {r['rollout_tps']:.0f} tok/s (rollout "
              f"{r['rollout_s']:.3f} s of a {r['step_s']:.3f} s step), serve {s:.0f} tok/s")
    g_tps = statistics.median(r["rollout_tps"] for r in gr)
    s_tps = statistics.median(sv)
    ro = statistics.median(r["rollout_s"] for r in gr)
    st = statistics.median(r["step_s"] for r in gr)
    print(f"median: grpo rollouts {g_tps:.0f} tok/s, serve {s_tps:.0f} tok/s, ratio "
          f"{g_tps / s_tps:.2f} (target >= 0.80); a GRPO step {st:.3f} s = rollouts {ro:.3f} s "
          f"({100 * ro / st:.0f} %) + learning {st - ro:.3f} s ({100 * (st - ro) / st:.0f} %)")


if __name__ == "__main__":
    sys.exit(main())
