"""Serving throughput under concurrency: `tandem serve` on loopback with 1, 4 and 16
streaming clients (bench/serve_load.cpp: C++ clients, so they take little CPU from the
server on a 2-core machine). Each client sends completion requests back to back (128-token prompt
budget, 64 new tokens, sampling) for --seconds; prints aggregate generated tokens/s and the
p50/p99 time to first token, and the 16-stream / 1-stream throughput ratio.

  /usr/bin/python3 bench/serve_load.py [--model small|RUN_DIR] [--quant none] [--seconds 20]
                                       [--stream-interval-ms 0]
"""
import argparse
import json
import os
import re
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
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--stream-interval-ms", type=float, default=0,
                    help="the server's --stream-interval-ms")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-serve-bench-")
    run = args.model if os.path.isdir(args.model) else infer.make_model(work, args.model)
    proc = subprocess.Popen([infer.h.tandem_bin(), "serve", "-c", run, "--port", "0",
                             "--threads", "2", "--parallel", "16", "--model-name", "bench",
                             "--quant", args.quant,
                             "--stream-interval-ms", str(args.stream_interval_ms)],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)", line)
    host, port = m.group(1), int(m.group(2))
    results = {}
    try:
        print(f"serve {run} ({args.quant}), 16 slots, 2 threads, stream interval "
              f"{args.stream_interval_ms:g} ms; {args.seconds:.0f} s per level")
        for level in [int(x) for x in args.levels.split(",")]:
            r = level_run(host, port, level, args.seconds)
            results[level] = r["tokens_per_s"]
            print(f"  {level:>2} streams: {r['tokens_per_s']:8.0f} tokens/s aggregate, "
                  f"{r['requests']} requests, TTFT p50 {r['ttft_p50_ms']:6.1f} ms, "
                  f"p99 {r['ttft_p99_ms']:6.1f} ms, errors {r['errors']}", flush=True)
        if 1 in results and 16 in results:
            print(f"  16 streams / 1 stream: {results[16] / results[1]:.2f}x")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
