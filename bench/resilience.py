"""Resilience benchmark: prints what faults cost a run, measured through the real binary.

  /usr/bin/python3 bench/resilience.py [--kills 100] [--small-steps 300] [--skip soak,goodput]

1. Soak: a supervised `tiny` run under >= --kills random SIGKILLs (training process at random
   times, during checkpoint writes, during resume, and the whole process tree), then the
   SHA-256 of its final weights, optimizer state and metrics against an uninterrupted run.
   Also the median time from a kill to the next completed step.
2. Goodput on `small`: a clean run and a run with one injected crash per minute
   (crash@every:60s), both under the supervisor; goodput from `tandem status`.
3. Checkpoint overhead at the default interval (from the clean `small` run): the extra wall time
   of the steps during which a checkpoint was copied or written, over total step time.
"""
import argparse
import bisect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "resilience"))
import harness as h  # noqa: E402


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def soak(work, data, kills):
    # About 40 steps pass per kill (restart, resume, the wait for a checkpoint write), so the
    # run is long enough for every kill to land before it ends.
    steps = max(2500, 50 * kills)
    cfg = h.write_config(os.path.join(work, "soak.toml"), data,
                         train={"max_steps": steps, "eval_every": 500},
                         checkpoint={"every_steps": 25, "every_seconds": 0, "keep_last": 3},
                         supervisor={"max_restarts": 10 * kills, "max_failures": 10})
    ref = os.path.join(work, "soak-ref")
    t0 = time.time()
    h.run(["train", cfg, "--out-dir", ref], timeout=3600)
    ref_wall = time.time() - t0
    run_dir = os.path.join(work, "soak")
    chaos = h.Chaos(cfg, run_dir, seed=1, mix=["worker", "worker", "ckpt", "resume", "tree"],
                    delay=(0.02, 0.3))
    t0 = time.time()
    rc, err = chaos.run(target_kills=kills, timeout=3600)
    wall = time.time() - t0
    same = rc == 0 and h.final_state(run_dir, steps) == h.final_state(ref, steps)
    stamps = sorted(r["t"] for r in read_jsonl(os.path.join(run_dir, "timing.jsonl")))
    lat = []
    for tk in chaos.kill_times:
        i = bisect.bisect_right(stamps, tk)
        if i < len(stamps):
            lat.append(stamps[i] - tk)
    st = h.status(run_dir)
    print(f"soak: {sum(chaos.kills.values())} kills {chaos.kills}, exit {rc}, "
          f"bit-identical to the uninterrupted run: {same}")
    print(f"soak: wall {wall:.1f} s vs {ref_wall:.1f} s uninterrupted; goodput {st['goodput']:.3f};"
          f" restarts {st['restarts']}")
    print(f"kill -> next completed step: median {statistics.median(lat):.3f} s "
          f"(p90 {sorted(lat)[int(0.9 * len(lat))]:.3f} s, n={len(lat)})")
    if not same:
        print(err[-3000:])
    return same


def small_run(work, data, name, steps, faults=None):
    cfg = h.write_config(os.path.join(work, name + ".toml"), data, base="configs/small.toml",
                         train={"max_steps": steps, "eval_every": 0})
    d = os.path.join(work, name)
    args = ["train", cfg, "--out-dir", d] + (["--inject", faults] if faults else [])
    t0 = time.time()
    h.run(args, timeout=7200)
    return d, time.time() - t0


def checkpoint_overhead(run_dir):
    timing = read_jsonl(os.path.join(run_dir, "timing.jsonl"))
    saves = [e for e in h.events(run_dir) if e["event"] == "checkpoint_saved"]
    t = [r["t"] for r in timing]
    dt = [b - a for a, b in zip(t, t[1:])]
    med = statistics.median(dt)
    affected = set()
    for e in saves:
        start, end = e["t"] - e["write_s"], e["t"]
        for i in range(1, len(t)):  # interval (t[i-1], t[i]] is step i+1's wall time
            if t[i] >= start - med and t[i - 1] <= end:
                affected.add(i)
    extra = sum(max(0.0, dt[i - 1] - med) for i in affected)
    writes = [e["write_s"] for e in saves]
    return extra / sum(dt), len(saves), statistics.median(writes) if writes else 0, med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--small-steps", type=int, default=300)
    ap.add_argument("--skip", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    print(f"kernels: {h.kernels()}", flush=True)
    work = tempfile.mkdtemp(prefix="tandem-resilience-bench-")
    try:
        data = h.prepare_dataset(work)
        if "soak" not in a.skip:
            soak(work, data, a.kills)
        if "goodput" not in a.skip:
            clean, wall_c = small_run(work, data, "small-clean", a.small_steps)
            sc = h.status(clean)
            ov, n, wmed, step = checkpoint_overhead(clean)
            print(f"small clean: {a.small_steps} steps in {wall_c:.1f} s, goodput "
                  f"{sc['goodput']:.3f}, median step {step:.3f} s")
            print(f"checkpoint overhead at the default interval (60 s): {100 * ov:.2f}% "
                  f"({n} checkpoints, median background write {wmed:.2f} s)")
            crash, wall_f = small_run(work, data, "small-crash", a.small_steps,
                                      "crash@every:60s")
            sf = h.status(crash)
            same = h.final_state(clean, a.small_steps) == h.final_state(crash, a.small_steps)
            print(f"small with a crash per minute: {sf['restarts']} restarts, {wall_f:.1f} s "
                  f"wall, goodput {sf['goodput']:.3f} (clean {sc['goodput']:.3f}), "
                  f"wall ratio {wall_f / wall_c:.3f}, bit-identical to clean: {same}")
    finally:
        if a.keep:
            print("work directory:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
