"""Data-parallel benchmark: Tandem's ranks against PyTorch DistributedDataParallel (Gloo), in
one session, on the same model, global batch and ranks.

  /usr/bin/python3 bench/data_parallel.py [--config configs/small.toml] [--steps 30]
                                          [--rounds 3] [--kills 5] [--skip ddp,recovery]

Rows (median tokens/s over rounds, the sides alternating within each round):
  tandem 1 rank x 2 threads; tandem 2 ranks x 1 thread (the exact sum, its buckets reduced
  during the backward); the same summed after the backward (TANDEM_DIST_OVERLAP=0: what the
  overlap hides); that with a plain float all-reduce (TANDEM_DIST_PLAIN_SUM=1: what the exact
  sum costs); PyTorch DDP 2 x 1.
Also: the share of training time rank 0 spent in collectives (not hidden by compute), and the
median time from a SIGKILL of a random rank to the next committed step at 4 ranks.
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "resilience"))
import harness as h  # noqa: E402


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def tandem_run(cfg, out, nproc, threads, env=None):
    shutil.rmtree(out, ignore_errors=True)
    h.run(["train", cfg, "--out-dir", out, "--nproc", str(nproc), "--threads", str(threads)],
          env=env, timeout=3600)
    steps = read_jsonl(os.path.join(out, "timing.jsonl"))[3:]  # past the warm-up
    end = [e for e in h.events(out) if e["event"] == "train_end"][-1]
    return {"tps": statistics.median(s["tokens_per_s"] for s in steps),
            "comm_share": end["comm_s"] / end["train_s"] if end.get("train_s") else 0.0}


def ddp_run(cfg, steps, core):
    # PyTorch's OpenBLAS gets the core Tandem chose from the CPU's features (or TORCH_CORETYPE):
    # Debian's OpenBLAS may not know this CPU and would fall back to SSE3 kernels.
    env = dict(os.environ, OPENBLAS_CORETYPE=core)
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_ddp.py"), cfg,
                        "--nproc", "2", "--threads-per-rank", "1", "--steps", str(steps)],
                       capture_output=True, text=True, timeout=3600, env=env)
    if p.returncode != 0:
        raise SystemExit("torch_ddp.py failed:\n" + p.stderr[-3000:])
    line = next(l for l in p.stdout.splitlines() if l.startswith("JSON "))
    return json.loads(line[5:])


def recovery(cfg, work, kills):
    """SIGKILLs a random rank of a 4-rank run after a committed step, `kills` times; the time
    from each kill to the next step committed (timing.jsonl)."""
    out = os.path.join(work, "recovery")
    shutil.rmtree(out, ignore_errors=True)
    proc = h.start(["train", cfg, "--out-dir", out, "--nproc", "4", "--threads", "1"])
    rng = random.Random(5)
    waits, regroup = [], []
    timing = os.path.join(out, "timing.jsonl")
    for _ in range(kills):
        base = len(read_jsonl(timing)) if os.path.exists(timing) else 0
        while (len(read_jsonl(timing)) if os.path.exists(timing) else 0) < base + 2:
            if proc.poll() is not None:
                raise SystemExit("the run ended early: " + proc.stderr.read()[-2000:])
            time.sleep(0.01)
        pids = {}
        for e in h.events(out):
            if e["event"] == "worker_start":
                pids[e["rank"]] = e["worker_pid"]
        rank = rng.randrange(4)
        n0 = len(read_jsonl(timing))
        t_kill = time.time()
        os.kill(pids[rank], signal.SIGKILL)
        while len(read_jsonl(timing)) <= n0:
            time.sleep(0.005)
        waits.append(read_jsonl(timing)[n0]["t"] - t_kill)
        back = [e["t"] for e in h.events(out) if e["event"] in ("resumed", "train_start") and e["t"] > t_kill]
        regroup.append(min(back) - t_kill if back else float("nan"))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
    proc.stderr.close()
    return waits, regroup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "small.toml"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--skip", default="")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    work = tempfile.mkdtemp(prefix="tandem-dpbench-")
    import toml
    base = toml.load(a.config)
    data = os.path.join(ROOT, base["data"]["dir"]) if not os.path.isabs(base["data"]["dir"]) else base["data"]["dir"]
    if not os.path.exists(os.path.join(data, "train.bin")):
        raise SystemExit(f"{data} is not prepared: run the README's first command")
    cfg = h.write_config(os.path.join(work, "bench.toml"), data, base=a.config,
                         train={"max_steps": a.steps, "eval_every": 0, "log_every": 1000},
                         checkpoint={"every_steps": 0, "every_seconds": 0})
    t = base["train"]
    print(f"config {a.config}: global batch {t['batch_size']} x {t['grad_accum']} sequences of "
          f"{t['seq_len']} tokens; {a.steps} steps x {a.rounds} rounds")
    kern = h.kernels()
    print("tandem kernels:", kern)
    import re
    m = re.search(r"openblas core (\w+)", kern)
    core = os.environ.get("TORCH_CORETYPE", m.group(1) if m else "")
    print("PyTorch's OPENBLAS_CORETYPE:", core)
    rows = {k: [] for k in ("t1x2", "t2x1", "t2x1seq", "t2x1plain", "ddp")}
    comm = {"t2x1": [], "t2x1seq": [], "t2x1plain": []}
    ddp_info = None
    for r in range(a.rounds):
        rows["t1x2"].append(tandem_run(cfg, os.path.join(work, "a"), 1, 2)["tps"])
        x = tandem_run(cfg, os.path.join(work, "b"), 2, 1)
        rows["t2x1"].append(x["tps"])
        comm["t2x1"].append(x["comm_share"])
        x = tandem_run(cfg, os.path.join(work, "s"), 2, 1, env={"TANDEM_DIST_OVERLAP": "0"})
        rows["t2x1seq"].append(x["tps"])
        comm["t2x1seq"].append(x["comm_share"])
        x = tandem_run(cfg, os.path.join(work, "c"), 2, 1,
                       env={"TANDEM_DIST_PLAIN_SUM": "1", "TANDEM_DIST_OVERLAP": "0"})
        rows["t2x1plain"].append(x["tps"])
        comm["t2x1plain"].append(x["comm_share"])
        if "ddp" not in skip:
            ddp_info = ddp_run(cfg, a.steps, core)
            rows["ddp"].append(ddp_info["tokens_per_s_median"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rows.items() if v))
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    print("\n| side | tokens/s (median) | exposed comm share |")
    print("|---|---|---|")
    print(f"| tandem 1 rank x 2 threads | {med['t1x2']:.0f} | - |")
    print(f"| tandem 2 ranks x 1 thread, exact sum, buckets during the backward | {med['t2x1']:.0f} | {statistics.median(comm['t2x1']):.1%} |")
    print(f"| tandem 2 ranks x 1 thread, exact sum after the backward | {med['t2x1seq']:.0f} | {statistics.median(comm['t2x1seq']):.1%} |")
    print(f"| tandem 2 ranks x 1 thread, plain float all-reduce | {med['t2x1plain']:.0f} | {statistics.median(comm['t2x1plain']):.1%} |")
    if "ddp" in med:
        print(f"| PyTorch DDP (gloo) 2 ranks x 1 thread | {med['ddp']:.0f} | {ddp_info['comm_exposed_share']:.1%} |")
        print(f"\nPyTorch {ddp_info['torch']}, BLAS core {ddp_info['blas_core']}")
    print(f"\n2x1 / 1x2 = {med['t2x1'] / med['t1x2']:.2f} (target >= 0.90)")
    print(f"exact / plain (both after the backward) = {med['t2x1seq'] / med['t2x1plain']:.3f}")
    print(f"overlapped / after the backward = {med['t2x1'] / med['t2x1seq']:.3f}")
    if "ddp" in med:
        print(f"tandem 2x1 / PyTorch DDP 2x1 = {med['t2x1'] / med['ddp']:.2f} (target >= 2)")
    if "recovery" not in skip:
        rcfg = h.write_config(os.path.join(work, "recovery.toml"), data, base=a.config,
                              train={"max_steps": 100000, "eval_every": 0, "log_every": 1000},
                              checkpoint={"every_steps": 0, "every_seconds": 30})
        w, g = recovery(rcfg, work, a.kills)
        print(f"\nrank death -> next committed step at 4 ranks: median {statistics.median(w):.2f} s "
              f"over {len(w)} kills ({', '.join(f'{x:.2f}' for x in w)}); target < 5 s")
        print(f"rank death -> group re-formed and state restored: median {statistics.median(g):.2f} s "
              f"(the rest is recomputing the step the death interrupted)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
