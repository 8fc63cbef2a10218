"""Batch-1 CPU inference speed, Tandem against llama.cpp in the same run.

For each model shape (`small`, and `gpt2-124m` with its 50,304-piece vocabulary) a checkpoint
is made (a dataset from a generated corpus, a couple of training steps: speed does not depend
on the weights), exported to GGUF in f32, q8_0 and q4_0, and then Tandem (f32, int8, q4) and
llama.cpp (same GGUF weights) are timed alternately, round by round: prefill of a 128-token
prompt and greedy decoding of 128 tokens, 2 threads for Tandem, the better of 1 and 2 for
llama.cpp. Prints the CPU, what each side was built with, the median of --rounds rounds (each
itself a median of 5 repetitions) and Tandem/llama.cpp ratios.

The llama.cpp peer is native llama.cpp when --llama-bench (or $LLAMA_BENCH) names a
`llama-bench` binary, built from source by bench/build_llama_cpp.sh at the commit it pins:
`llama-bench -m FILE -p 128 -n 128 -t T -r 5 -o json`. Without it the peer is node-llama-cpp's
prebuilt CPU build driven from JavaScript (bench/llama_cpp_speed.mjs), which runs about 3x
slower than native llama.cpp, so its ratios flatter Tandem; a warning says so.

  /usr/bin/python3 bench/infer.py [--models small,gpt2-124m] [--rounds 3] [--keep DIR]
                                  [--llama-bench PATH]
"""
import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "resilience"))
import harness as h  # noqa: E402

ROOT = h.ROOT
SPEED = os.path.join(ROOT, "build", "bench", "infer_speed")
BANDWIDTH = os.path.join(ROOT, "build", "bench", "read_bandwidth")
PAIRS = [("none", "f32"), ("int8", "q8_0"), ("q4", "q4_0")]
PROMPT, GEN, REPS = 128, 128, 5
NODE_WARNING = ("WARNING: no --llama-bench (or $LLAMA_BENCH) given, so the llama.cpp peer is "
                "node-llama-cpp's prebuilt build driven from JavaScript, about 3x slower than "
                "native llama.cpp: the Tandem/llama.cpp ratios below are inflated. Build the "
                "native peer with bench/build_llama_cpp.sh and pass --llama-bench PATH.")
# ggml's names for the x86 features its CPU kernels are compiled for, and the compiler's macros.
GGML_FEATURES = [("SSE3", "__SSE3__"), ("SSSE3", "__SSSE3__"), ("AVX", "__AVX__"),
                 ("AVX2", "__AVX2__"), ("F16C", "__F16C__"), ("FMA", "__FMA__"),
                 ("BMI2", "__BMI2__"), ("AVX_VNNI", "__AVXVNNI__"), ("AVX512", "__AVX512F__"),
                 ("AVX512_VBMI", "__AVX512VBMI__"), ("AVX512_VNNI", "__AVX512VNNI__"),
                 ("AVX512_BF16", "__AVX512BF16__"), ("AMX_INT8", "__AMX_INT8__")]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def pinned_commit():
    """The llama.cpp commit bench/build_llama_cpp.sh pins."""
    with open(os.path.join(ROOT, "bench", "build_llama_cpp.sh")) as f:
        m = re.search(r"^LLAMA_CPP_COMMIT=([0-9a-f]{40})", f.read(), re.M)
    return m.group(1) if m else None


def make_model(work, name):
    d = os.path.join(work, name)
    if os.path.exists(os.path.join(d, "run")):
        return os.path.join(d, "run")
    os.makedirs(d, exist_ok=True)
    if name == "small":
        ds = h.prepare_dataset(d, 4096)
        cfg = h.write_config(os.path.join(d, "c.toml"), ds, base="configs/small.toml",
                             train={"max_steps": 2, "eval_every": 0, "batch_size": 1,
                                    "grad_accum": 1},
                             checkpoint={"every_steps": 2, "every_seconds": 0})
    else:
        corpus = os.path.join(d, "corpus.txt")
        h.make_corpus(corpus, n_words=3_000_000, vocab=120_000)
        ds = os.path.join(d, "ds")
        subprocess.run([h.tandem_bin(), "data", "prepare", "-i", corpus, "-o", ds,
                        "--vocab-size", "50304"], check=True, capture_output=True)
        cfg = h.write_config(os.path.join(d, "c.toml"), ds, base="configs/gpt2-124m.toml",
                             train={"max_steps": 1, "eval_every": 0, "batch_size": 1,
                                    "grad_accum": 1, "seq_len": 64},
                             checkpoint={"every_steps": 1, "every_seconds": 0})
    run = os.path.join(d, "run")
    h.run(["train", cfg, "--out-dir", run, "--no-supervise"], timeout=3600)
    return run


_tandem_shown = False


def tandem_speed(run, quant):
    global _tandem_shown
    p = subprocess.run([SPEED, run, "--quant", quant, "--threads", "2"], check=True,
                       capture_output=True, text=True)
    line = p.stdout.strip().splitlines()[-1]
    if not _tandem_shown:  # what infer_speed itself says, once
        _tandem_shown = True
        print(f"  Tandem ({SPEED}, 2 threads) prints: {line}")
        for err in p.stderr.strip().splitlines():
            if err.split(": ", 1)[-1] not in line:  # the kernels line is in the JSON too
                print(f"  Tandem stderr: {err}")
    return json.loads(line)


def read_bandwidth():
    """Memory read bandwidth measured now (build/bench/read_bandwidth, 2 threads), GB/s."""
    out = subprocess.run([BANDWIDTH, "--threads", "2"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["read_gbps"]


def tandem_build():
    """Tandem's build type and flags, from build/CMakeCache.txt (read only)."""
    keys = ("CMAKE_BUILD_TYPE", "CMAKE_CXX_COMPILER", "CMAKE_CXX_FLAGS", "TANDEM_CUDA")
    found = {}
    try:
        with open(os.path.join(ROOT, "build", "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"([A-Za-z_]+):[A-Z]+=(.*)$", line.strip())
                if m and m.group(1) in keys:
                    found[m.group(1)] = m.group(2)
    except OSError:
        return "build/CMakeCache.txt not readable"
    return ", ".join(f"{k}={found[k]!r}" for k in keys if k in found)


def node_speed(gguf, label):
    """node-llama-cpp's better result of 1 and 2 threads: inside Node, its 2 spinning threads
    share the 2 cores with Node's own thread and decoding collapses (about 60 tokens/s on `tiny`
    against 1,100 with one thread), which would not be a fair peer."""
    best = None
    for threads in (1, 2):
        out = subprocess.run(["node", os.path.join(ROOT, "bench", "llama_cpp_speed.mjs"), gguf,
                              label, str(PROMPT), str(GEN), str(REPS), str(threads)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        r["prefill_threads"] = r["decode_threads"] = threads
        if best is None:
            best = r
            continue
        for k in ("prefill", "decode"):
            if r[f"{k}_tps"] > best[f"{k}_tps"]:
                best[f"{k}_tps"], best[f"{k}_threads"] = r[f"{k}_tps"], threads
    return best


def bench_tps(test):
    """A llama-bench test's tokens/s: the median of its repetitions (as Tandem's), else avg_ts."""
    samples = test.get("samples_ts") or []
    return statistics.median(samples) if samples else float(test["avg_ts"])


_native_shown = False


def native_speed(llama_bench, gguf, label):
    """Native llama.cpp (llama-bench): prefill (pp128) and decode (tg128) tokens/s, the better
    of 1 and 2 threads for each, like the node peer."""
    global _native_shown
    best = {"runtime": "llama.cpp", "quant": label, "prefill_tps": 0.0, "decode_tps": 0.0}
    for threads in (1, 2):
        cmd = [llama_bench, "-m", gguf, "-p", str(PROMPT), "-n", str(GEN), "-t", str(threads),
               "-r", str(REPS), "-o", "json"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        tests = json.loads(p.stdout)
        pp = [t for t in tests if t["n_prompt"] > 0 and t["n_gen"] == 0]
        tg = [t for t in tests if t["n_gen"] > 0 and t["n_prompt"] == 0]
        if len(pp) != 1 or len(tg) != 1:
            raise SystemExit(f"{' '.join(cmd)}: expected one pp and one tg test, got {p.stdout}")
        if not _native_shown:  # what this llama.cpp build is, once
            _native_shown = True
            t = pp[0]
            print(f"  llama.cpp ({llama_bench}) reports: build_commit={t.get('build_commit')} "
                  f"build_number={t.get('build_number')} backends={t.get('backends')!r} "
                  f"cpu_info={t.get('cpu_info')!r} gpu_info={t.get('gpu_info')!r} "
                  f"n_batch={t.get('n_batch')} n_ubatch={t.get('n_ubatch')} "
                  f"type_k/v={t.get('type_k')}/{t.get('type_v')} "
                  f"flash_attn={t.get('flash_attn')} use_mmap={t.get('use_mmap')}")
            pin = pinned_commit()
            commit = str(t.get("build_commit", ""))
            if pin and commit not in ("", "unknown") and not pin.startswith(commit):
                print(f"  WARNING: llama-bench was built at {commit}, not the pinned commit "
                      f"{pin} (bench/build_llama_cpp.sh)")
        for key, test in (("prefill", pp[0]), ("decode", tg[0])):
            tps = bench_tps(test)
            if tps > best[f"{key}_tps"]:
                best[f"{key}_tps"], best[f"{key}_threads"] = tps, threads
    return best


def native_buffers(llama_bench, gguf):
    """Where llama.cpp puts the file's weights, from a tiny verbose llama-bench run (a 1-token
    decode, not timed): a buffer type other than CPU/CPU_Mapped (AMX, CPU_AARCH64) means its
    weights were repacked for that family of kernels."""
    cmd = [llama_bench, "-m", gguf, "-p", "0", "-n", "1", "-r", "1", "-t", "1", "-o", "json",
           "-v"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    bufs = re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", p.stderr)
    if p.returncode != 0 or not bufs:
        return f"unknown ({' '.join(cmd)} exited {p.returncode})"
    return ", ".join(f"{name} {mib} MiB" for name, mib in bufs)


def native_build(llama_bench):
    """The ggml CPU features and options llama-bench's CPU kernels were compiled with: llama-bench
    does not print ggml's system info, so they come from the compile command of ggml-cpu.c in
    the build's compile_commands.json (bench/build_llama_cpp.sh exports it) and the compiler's
    predefined macros for its -m flags (ggml picks its kernels with those macros)."""
    bdir = os.path.dirname(os.path.dirname(os.path.realpath(llama_bench)))
    path = os.path.join(bdir, "compile_commands.json")
    try:
        with open(path) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return f"unknown (no readable {path}; build with bench/build_llama_cpp.sh)"
    entry = next((e for e in entries if e["file"].endswith("ggml-cpu/ggml-cpu.c")), None)
    if entry is None:
        return f"unknown (no ggml-cpu/ggml-cpu.c in {path})"
    argv = entry.get("arguments") or shlex.split(entry["command"])
    arch = [a for a in argv[1:] if a.startswith("-m")]
    opts = [a[2:] for a in argv if a.startswith("-DGGML_USE_")]
    macros = subprocess.run([argv[0]] + arch + ["-dM", "-E", "-x", "c", "/dev/null"],
                            capture_output=True, text=True).stdout.split()
    feats = [name for name, macro in GGML_FEATURES if macro in macros]
    return (f"{' '.join(arch) or '(no -m flags)'} -> {' '.join(feats) or 'none found'}; "
            f"{' '.join(opts)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="small,gpt2-124m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", help="work directory to keep and reuse")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH") or None,
                    help="native llama-bench binary (bench/build_llama_cpp.sh); default "
                         "$LLAMA_BENCH, else node-llama-cpp's slower JavaScript-driven build")
    args = ap.parse_args()
    lb = args.llama_bench
    if lb and not (os.path.isfile(lb) and os.access(lb, os.X_OK)):
        raise SystemExit(f"--llama-bench {lb}: not an executable file")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"Tandem: {SPEED}; {tandem_build()}")
    if lb:
        peer = "llama.cpp"
        print(f"llama.cpp: native {os.path.realpath(lb)} (llama-bench -p {PROMPT} -n {GEN} "
              f"-t 1|2 -r {REPS}; pinned commit {pinned_commit()})")
        print(f"llama.cpp ggml-cpu compiled with: {native_build(lb)}")
    else:
        peer = "node-lcpp"
        print(NODE_WARNING)
        print(NODE_WARNING, file=sys.stderr)
    work = args.keep or tempfile.mkdtemp(prefix="tandem-infer-bench-")
    try:
        for name in args.models.split(","):
            run = make_model(work, name)
            ggufs = {}
            for quant, label in PAIRS:
                ggufs[label] = os.path.join(work, name, f"{label}.gguf")
                if not os.path.exists(ggufs[label]):
                    h.run(["export", "-c", run, "-f", "gguf", "--quant", quant, "-o", ggufs[label]])
            print(f"\n{name}:  (prefill {PROMPT} tokens, decode {GEN} tokens, batch 1, Tandem 2 "
                  f"threads, {peer} the better of 1 and 2; median of {args.rounds} rounds)")
            bandwidth_rows = []
            if lb:
                for _, label in PAIRS:
                    print(f"  llama.cpp {label}.gguf weight buffers: "
                          f"{native_buffers(lb, ggufs[label])}")
            for quant, label in PAIRS:
                t_pre, t_dec, l_pre, l_dec, thr, bw, t_mb = [], [], [], [], [], [], 0
                for _ in range(args.rounds):
                    t = tandem_speed(run, quant)
                    t_mb = t["weight_mb"]
                    bw.append(read_bandwidth())
                    ll = native_speed(lb, ggufs[label], label) if lb else \
                        node_speed(ggufs[label], label)
                    t_pre.append(t["prefill_tps"])
                    t_dec.append(t["decode_tps"])
                    l_pre.append(ll["prefill_tps"])
                    l_dec.append(ll["decode_tps"])
                    thr.append(f"{ll['prefill_threads']}/{ll['decode_threads']}")
                tp, td = statistics.median(t_pre), statistics.median(t_dec)
                lp, ld = statistics.median(l_pre), statistics.median(l_dec)
                if label == PAIRS[0][1]:  # after the first row's runs, which print the builds
                    print(f"  {'weights':<12}{'Tandem prefill':>16}{peer:>12}{'ratio':>8}"
                          f"{'Tandem decode':>16}{peer:>12}{'ratio':>8}  "
                          f"{peer} threads (prefill/decode per round)")
                print(f"  {quant + '/' + label:<12}{tp:>16.0f}{lp:>12.0f}{tp / lp:>8.2f}"
                      f"{td:>16.0f}{ld:>12.0f}{td / ld:>8.2f}  {','.join(thr)}", flush=True)
                # Batch-1 decode reads every weight once per token: its ceiling is the memory
                # read bandwidth, measured in the same rounds.
                b = statistics.median(bw)
                t_gbps = t_mb * 1e6 * td / 1e9
                l_gbps = os.path.getsize(ggufs[label]) * ld / 1e9
                bandwidth_rows.append(
                    f"  {quant + '/' + label:<12} Tandem {t_mb:7.1f} MB x {td:6.0f} tok/s = "
                    f"{t_gbps:5.1f} GB/s ({100 * t_gbps / b:3.0f}%); {peer} "
                    f"{os.path.getsize(ggufs[label]) / 1e6:7.1f} MB x {ld:6.0f} tok/s = "
                    f"{l_gbps:5.1f} GB/s ({100 * l_gbps / b:3.0f}%) of the measured read "
                    f"bandwidth {b:.1f} GB/s")
            print("  decode as memory traffic (weights read per token x tokens/s):")
            print("\n".join(bandwidth_rows), flush=True)
        if not lb:
            print("\n" + NODE_WARNING)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
