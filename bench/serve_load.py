"""Serving throughput under concurrency: `tandem serve` on loopback with 1, 4 and 16
streaming clients (bench/serve_load.cpp: C++ clients, so they take little CPU from the
server on a 2-core machine). Each client sends completion requests back to back (128-token prompt
budget, 64 new tokens, sampling) for --seconds; prints aggregate generated tokens/s and the
p50/p99 time to first token, and the 16-stream / 1-stream throughput ratio. The levels run in
--rounds interleaved rounds (1, 4, 16, 1, 4, 16, ...) against one server, so a slow spell of a
shared machine falls on every level alike; the summary gives each level's median and the ratio
of the medians.

  /usr/bin/python3 bench/serve_load.py [--model small|gpt2-124m|RUN_DIR] [--quant none]
                                       [--seconds 10] [--rounds 3] [--stream-interval-ms auto]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import infer  # noqa: E402  (make_model)

LOAD = os.path.join(infer.ROOT, "build", "bench", "serve_load")


def level_run(host, port, streams, seconds):
    out = subprocess.run([LOAD, "--host", host, "--port", str(port), "--streams", str(streams),
                          "--seconds", str(seconds)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--stream-interval-ms", default="auto",
                    help="the server's --stream-interval-ms (auto, or milliseconds)")
    args = ap.parse_args()
    print(f"kernels: {infer.h.kernels()}", flush=True)
    work = tempfile.mkdtemp(prefix="tandem-serve-bench-")
    run = args.model if os.path.isdir(args.model) else infer.make_model(work, args.model)
    proc = subprocess.Popen([infer.h.tandem_bin(), "serve", "-c", run, "--port", "0",
                             "--threads", "2", "--parallel", "16", "--model-name", "bench",
                             "--quant", args.quant,
                             "--stream-interval-ms", args.stream_interval_ms],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)", line)
    host, port = m.group(1), int(m.group(2))
    levels = [int(x) for x in args.levels.split(",")]
    results = {n: [] for n in levels}
    try:
        print(f"serve {run} ({args.quant}), 16 slots, 2 threads, stream interval "
              f"{args.stream_interval_ms}; {args.seconds:.0f} s per level, "
              f"{args.rounds} rounds")
        for rnd in range(args.rounds):
            for level in levels:
                r = level_run(host, port, level, args.seconds)
                results[level].append(r)
                print(f"  round {rnd + 1}: {level:>2} streams: {r['tokens_per_s']:8.0f} tokens/s "
                      f"aggregate, {r['requests']} requests, TTFT p50 {r['ttft_p50_ms']:6.1f} ms, "
                      f"p99 {r['ttft_p99_ms']:6.1f} ms, errors {r['errors']}", flush=True)
        med = {}
        print("medians:")
        for level in levels:
            rs = results[level]
            med[level] = statistics.median(r["tokens_per_s"] for r in rs)
            print(f"  {level:>2} streams: {med[level]:8.0f} tokens/s, TTFT p50 "
                  f"{statistics.median(r['ttft_p50_ms'] for r in rs):6.1f} ms, p99 "
                  f"{statistics.median(r['ttft_p99_ms'] for r in rs):6.1f} ms, errors "
                  f"{sum(r['errors'] for r in rs)}")
        if 1 in med and 16 in med:
            per_round = sorted(rs16["tokens_per_s"] / rs1["tokens_per_s"]
                               for rs1, rs16 in zip(results[1], results[16]))
            print(f"  16 streams / 1 stream: {med[16] / med[1]:.2f}x (per round: "
                  + ", ".join(f"{x:.2f}" for x in per_round) + ")")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
