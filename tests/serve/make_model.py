"""Test fixture: a small trained checkpoint for the serving tests. Prepares a dataset from a
generated corpus (4,096-piece tokenizer) and trains `tiny` for 60 steps into OUT_DIR/run.

  /usr/bin/python3 tests/serve/make_model.py OUT_DIR
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402


def main():
    out = os.path.abspath(sys.argv[1])
    run = os.path.join(out, "run")
    if os.path.exists(os.path.join(run, "step-00000060", "manifest.json")):
        return
    os.makedirs(out, exist_ok=True)
    ds = h.prepare_dataset(out)
    cfg = h.write_config(os.path.join(out, "tiny.toml"), ds,
                         train={"max_steps": 60, "eval_every": 0},
                         checkpoint={"every_steps": 60, "every_seconds": 0})
    shutil.rmtree(run, ignore_errors=True)
    h.run(["train", cfg, "--out-dir", run, "--no-supervise"], timeout=600)
    print(f"model ready: {run}")


if __name__ == "__main__":
    main()
