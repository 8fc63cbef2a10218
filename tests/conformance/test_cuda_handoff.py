"""Train here, serve there: a `tiny` run trained on the CUDA backend writes checkpoints in the
common format; the CPU then resumes the run from them and generates from the result. Exits 77
(skipped, with the reason) where the CUDA backend finds no device.

  TANDEM_BIN=... /usr/bin/python3 tests/conformance/test_cuda_handoff.py
"""
import glob
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402


def main():
    work = tempfile.mkdtemp(prefix="tandem-cuda-handoff-")
    ds = h.prepare_dataset(work)
    run = os.path.join(work, "run")
    common = {"eval_every": 0, "batch_size": 4, "grad_accum": 1}
    gpu_cfg = h.write_config(os.path.join(work, "gpu.toml"), ds,
                             train=dict(common, max_steps=20, backend="cuda"),
                             checkpoint={"every_steps": 10, "every_seconds": 0})
    p = h.run(["train", gpu_cfg, "--out-dir", run, "--no-supervise"], check=False)
    if p.returncode != 0 and "no device" in p.stderr:
        print("SKIPPED: CUDA hand-off: " + p.stderr.strip().splitlines()[-1], file=sys.stderr)
        return 77
    assert p.returncode == 0, p.stderr[-3000:]
    steps = sorted(glob.glob(os.path.join(run, "step-*")))
    assert steps and steps[-1].endswith("step-00000020"), steps
    with open(os.path.join(steps[-1], "manifest.json")) as f:
        assert json.load(f)["step"] == 20

    # The CPU resumes the GPU's run and carries it on.
    cpu_cfg = h.write_config(os.path.join(work, "cpu.toml"), ds,
                             train=dict(common, max_steps=30, backend="cpu", threads=2),
                             checkpoint={"every_steps": 10, "every_seconds": 0})
    p = h.run(["train", cpu_cfg, "--out-dir", run, "--resume", "--no-supervise"], check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from" in p.stderr and "step 20" in p.stderr, p.stderr[-2000:]
    assert os.path.isdir(os.path.join(run, "step-00000030")), os.listdir(run)
    losses = []
    for line in open(os.path.join(run, "metrics.jsonl")):
        rec = json.loads(line)
        if "loss" in rec:
            losses.append(rec["loss"])
    assert losses and all(math.isfinite(x) for x in losses), losses

    # And generates on the CPU.
    p = h.run(["generate", "-c", run, "--prompt", "And the", "--max-tokens", "16",
               "--backend", "cpu"], check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stdout.strip()) > len("And the"), p.stdout
    print("CUDA-trained checkpoint resumed and generated on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
