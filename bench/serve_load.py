"""Serving throughput under concurrency: `tandem serve` on loopback with 1, 4 and 16
streaming clients. Each client sends completion requests back to back (128-token prompt
budget, 64 new tokens, sampling) for --seconds; prints aggregate generated tokens/s and the
p50/p99 time to first token, and the 16-stream / 1-stream throughput ratio.

  /usr/bin/python3 bench/serve_load.py [--model small|RUN_DIR] [--quant none] [--seconds 20]
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import infer  # noqa: E402  (make_model)

PROMPTS = ["And the LORD said unto Moses", "In the beginning", "Blessed are they that mourn",
           "And it came to pass in those days", "the king of Israel", "unto the people"]


def client(host, port, seconds, idx, ttfts, tokens, errors):
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        body = json.dumps({"model": "bench", "prompt": PROMPTS[(idx + n) % len(PROMPTS)],
                           "max_tokens": 64, "temperature": 1.0, "seed": idx * 1000 + n,
                           "stream": True, "stream_options": {"include_usage": True}})
        n += 1
        c = http.client.HTTPConnection(host, port, timeout=120)
        t0 = time.time()
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            errors.append(r.status)
            r.read()
            continue
        first = None
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if first is None and ev["choices"] and ev["choices"][0]["text"]:
                first = time.time() - t0
            if ev.get("usage"):
                tokens.append(ev["usage"]["completion_tokens"])
        if first is not None:
            ttfts.append(first)
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--levels", default="1,4,16")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-serve-bench-")
    run = args.model if os.path.isdir(args.model) else infer.make_model(work, args.model)
    proc = subprocess.Popen([infer.h.tandem_bin(), "serve", "-c", run, "--port", "0",
                             "--threads", "2", "--parallel", "16", "--model-name", "bench",
                             "--quant", args.quant], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)", line)
    host, port = m.group(1), int(m.group(2))
    results = {}
    try:
        print(f"serve {run} ({args.quant}), 16 slots, 2 threads; {args.seconds:.0f} s per level")
        for level in [int(x) for x in args.levels.split(",")]:
            ttfts, tokens, errors = [], [], []
            threads = [threading.Thread(target=client,
                                        args=(host, port, args.seconds, i, ttfts, tokens, errors))
                       for i in range(level)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t0
            tps = sum(tokens) / wall
            q = sorted(ttfts)
            p50 = statistics.median(q)
            p99 = q[min(len(q) - 1, int(0.99 * len(q)))]
            results[level] = tps
            print(f"  {level:>2} streams: {tps:8.0f} tokens/s aggregate, {len(tokens)} requests, "
                  f"TTFT p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms, errors {len(errors)}",
                  flush=True)
        if 1 in results and 16 in results:
            print(f"  16 streams / 1 stream: {results[16] / results[1]:.2f}x")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
