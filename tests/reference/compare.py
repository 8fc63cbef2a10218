# Checks a dump of the C++ model (config.json, model.safetensors, outputs.safetensors in DIR)
# against the float64 PyTorch reference: logits, loss and every parameter gradient.
# Usage: /usr/bin/python3 compare.py DIR [--tol 1e-4]. Exit 0 all pass, 1 mismatch, 2 error.
import argparse
import json
import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import LlamaRef, load_safetensors  # noqa: E402

CONFIG_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size",
               "context", "tie_embeddings", "rope_theta", "norm_eps")


def rel_err(got, want):
    """||got - want|| / ||want||, or the absolute norm when want is all zero; inf on a shape
    mismatch."""
    if tuple(got.shape) != tuple(want.shape):
        print(f"  shape {tuple(got.shape)} != reference {tuple(want.shape)}")
        return float("inf")
    got, want = got.double(), want.double()
    num = torch.linalg.norm((got - want).reshape(-1)).item()
    den = torch.linalg.norm(want.reshape(-1)).item()
    return num / den if den > 0 else num


def run(dump_dir, tol):
    with open(os.path.join(dump_dir, "config.json")) as f:
        cfg = json.load(f)
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"config.json lacks {missing}")

    torch.set_default_dtype(torch.float64)
    model = LlamaRef(cfg).double()
    model.load_weights(load_safetensors(os.path.join(dump_dir, "model.safetensors")))
    out = load_safetensors(os.path.join(dump_dir, "outputs.safetensors"))
    tokens, targets = out["tokens"].long(), out["targets"].long()
    B, T = tokens.shape
    if T > cfg["context"]:
        raise ValueError(f"sequence length {T} exceeds context {cfg['context']}")

    logits = model(tokens)
    loss = model.loss(logits, targets)
    loss.backward()

    results = [("logits", rel_err(out["logits"], logits.detach())),
               ("loss", rel_err(out["loss"].reshape(()), loss.detach()))]
    failures = []
    params = dict(model.named_parameters())
    dumped = {k[len("grad."):] for k in out if k.startswith("grad.")}
    for name in sorted(set(params) - dumped):
        failures.append(f"grad.{name} (missing from the dump)")
    for name in sorted(dumped - set(params)):
        failures.append(f"grad.{name} (not a parameter of the reference)")
    for name, p in params.items():
        if name in dumped:
            results.append((f"grad.{name}", rel_err(out[f"grad.{name}"], p.grad)))

    print(f"[compare] {dump_dir}: B={B} T={T} loss={loss.item():.6f} tol={tol:g}")
    for name, err in results:
        ok = err <= tol  # NaN fails too
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<52} rel_err {err:.3e}")
        if not ok:
            failures.append(name)
    if failures:
        print(f"[compare] FAILED: {', '.join(failures)}")
        return 1
    print(f"[compare] all {len(results)} quantities within {tol:g}")
    return 0


def main():
    ap = argparse.ArgumentParser(description="Check a C++ model dump against the reference.")
    ap.add_argument("dir", help="dump directory written by the C++ test")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative error bound")
    args = ap.parse_args()
    try:
        return run(args.dir, args.tol)
    except Exception:  # a broken dump is an error, not a mismatch
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
