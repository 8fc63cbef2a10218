# Checks Tandem's GRPO objective (a dump written by tests/rl/test_grpo_reference.cpp) against
# an independent float64 PyTorch implementation written from the papers:
#   advantages   grpo / dapo: (r - mean) / (std + 1e-4) per group (torch.std, unbiased);
#                dr_grpo: r - mean
#   per token    -min(ratio * A, clamp(ratio, 1 - clip_low, 1 + clip_high) * A)
#                + beta * (exp(ref - logp) - (ref - logp) - 1)       (k3 estimator of KL)
#   aggregation  grpo: mean over sequences of each sequence's token mean;
#                dr_grpo: token sum / (sequences * max_new_tokens);
#                dapo: token sum / all loss tokens
# with logp from log_softmax(logits / temperature) of the reference Llama (llama_ref.py),
# sequences with in_loss = 0 left out entirely. Autograd gives the parameter gradients.
# Usage: /usr/bin/python3 grpo_compare.py DIR [--tol 1e-4]. Exit 0 pass, 1 mismatch, 2 error.
import argparse
import json
import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import LlamaRef, load_safetensors  # noqa: E402


def rel_err(got, want):
    got, want = got.double().reshape(-1), want.double().reshape(-1)
    if got.shape != want.shape:
        return float("inf")
    den = torch.linalg.norm(want).item()
    num = torch.linalg.norm(got - want).item()
    return num / den if den > 0 else num


def advantages(rewards, group, loss_type):
    r = rewards.view(-1, group)
    mean = r.mean(dim=1, keepdim=True)
    if loss_type == "dr_grpo":
        return (r - mean).reshape(-1)
    return ((r - mean) / (r.std(dim=1, keepdim=True) + 1e-4)).reshape(-1)


def grpo_loss(logits, targets, rewards, in_loss, logp_old, logp_ref, o):
    S, T, V = logits.shape
    mask = (targets >= 0) & in_loss.bool().view(S, 1)
    logp_all = torch.log_softmax(logits / o["temperature"], dim=-1)
    logp = logp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    adv = advantages(rewards, o["group"], o["loss_type"]).view(S, 1)
    ratio = torch.exp(logp - logp_old)
    clipped = torch.clamp(ratio, 1 - o["clip_low"], 1 + o["clip_high"])
    per_token = -torch.min(ratio * adv, clipped * adv)
    if o["beta"] > 0:
        d = logp_ref - logp
        per_token = per_token + o["beta"] * (torch.exp(d) - d - 1)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    m = mask.double()
    lengths = m.sum(dim=1)
    seqs = in_loss.bool() & (lengths > 0)
    n_seqs = seqs.double().sum()
    if o["loss_type"] == "grpo":
        seq_mean = per_token.sum(dim=1) / lengths.clamp(min=1)
        return (seq_mean * seqs.double()).sum() / n_seqs
    if o["loss_type"] == "dr_grpo":
        return per_token.sum() / (n_seqs * o["max_new_tokens"])
    if o["loss_type"] == "dapo":
        return per_token.sum() / m.sum()
    raise ValueError(f"unknown loss type {o['loss_type']}")


def run(d, tol):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "objective.json")) as f:
        o = json.load(f)
    torch.set_default_dtype(torch.float64)
    model = LlamaRef(cfg).double()
    model.load_weights(load_safetensors(os.path.join(d, "model.safetensors")))
    out = load_safetensors(os.path.join(d, "outputs.safetensors"))
    inputs, targets = out["inputs"].long(), out["targets"].long()
    logits = model(inputs)
    loss = grpo_loss(logits, targets, out["rewards"].double(), out["in_loss"],
                     out["logp_old"].double(), out["logp_ref"].double(), o)
    loss.backward()
    results = [("loss", rel_err(out["loss"], loss.detach()))]
    failures = []
    for name, p in model.named_parameters():
        key = f"grad.{name}"
        if key not in out:
            failures.append(f"{key} (missing from the dump)")
            continue
        results.append((key, rel_err(out[key], p.grad)))
    print(f"[grpo_compare] {d}: {o['loss_type']} beta={o['beta']} T={o['temperature']} "
          f"loss={loss.item():.8f} (tandem {out['loss'].item():.8f}) tol={tol:g}")
    for name, err in results:
        ok = err <= tol
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<52} rel_err {err:.3e}")
        if not ok:
            failures.append(name)
    if failures:
        print(f"[grpo_compare] FAILED: {', '.join(failures)}")
        return 1
    print(f"[grpo_compare] all {len(results)} quantities within {tol:g}")
    return 0


def main():
    ap = argparse.ArgumentParser(description="Check a GRPO objective dump against PyTorch.")
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    try:
        return run(a.dir, a.tol)
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
