#!/usr/bin/python3
"""PyTorch peer for bench/train_step: the same Llama-style model, batch and optimizer in fp32,
timed per training step (forward + backward + AdamW). Prints tokens/s.

    /usr/bin/python3 bench/torch_train.py CONFIG.toml [--batch B] [--seq T] [--steps N] [--threads K]
"""
import argparse
import ctypes
import math
import os
import re
import time

import toml
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        dim, self.h, self.hkv = c["dim"], c["n_heads"], c.get("n_kv_heads", c["n_heads"])
        self.d = dim // self.h
        self.ln1 = RMSNorm(dim, c.get("norm_eps", 1e-5))
        self.ln2 = RMSNorm(dim, c.get("norm_eps", 1e-5))
        self.q = nn.Linear(dim, self.h * self.d, bias=False)
        self.k = nn.Linear(dim, self.hkv * self.d, bias=False)
        self.v = nn.Linear(dim, self.hkv * self.d, bias=False)
        self.o = nn.Linear(self.h * self.d, dim, bias=False)
        self.gate = nn.Linear(dim, c["hidden_dim"], bias=False)
        self.up = nn.Linear(dim, c["hidden_dim"], bias=False)
        self.down = nn.Linear(c["hidden_dim"], dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        y = self.ln1(x)
        q = self.q(y).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k(y).view(B, T, self.hkv, self.d).transpose(1, 2)
        v = self.v(y).view(B, T, self.hkv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.hkv != self.h:
            k = k.repeat_interleave(self.h // self.hkv, dim=1)
            v = v.repeat_interleave(self.h // self.hkv, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d) + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o(y)
        y = self.ln2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c.get("norm_eps", 1e-5))
        self.head = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        if c.get("tie_embeddings", True):
            self.head.weight = self.embed.weight

    def forward(self, tokens, targets):
        T = tokens.shape[1]
        d = self.c["dim"] // self.c["n_heads"]
        inv = 1.0 / (self.c.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2).float() / d))
        f = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def kernels():
    """Which BLAS core PyTorch's matmuls run on: the OpenBLAS it loaded, asked directly."""
    core = "unknown"
    try:
        lib = ctypes.CDLL("libopenblas.so.0")  # the copy already loaded into this process
        lib.openblas_get_corename.restype = ctypes.c_char_p
        core = lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        pass
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]*)", cfg)
    return (f"openblas core {core} (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}),"
            f" BLAS_INFO={blas.group(1) if blas else '?'}, cpu capability "
            f"{torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, 'cpu') else '?'}"
            f", mkldnn {torch.backends.mkldnn.is_available()}, {torch.get_num_threads()} intra-op "
            f"threads, openblas threads {blas_threads()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default: active)')}")


def blas_threads():
    """OpenBLAS's own thread pool: Debian's pthread OpenBLAS ignores torch.set_num_threads."""
    try:
        return ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads()
    except (OSError, AttributeError):
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cfg = toml.load(a.config)
    mc, tc = cfg["model"], cfg.get("train", {})
    B = a.batch or tc.get("batch_size", 8)
    T = a.seq or tc.get("seq_len", 256)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Llama(mc)
    # foreach: the multi-tensor AdamW, PyTorch's faster path on CPU.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            foreach=True)
    tokens = torch.randint(0, mc["vocab_size"], (B, T))
    targets = torch.randint(0, mc["vocab_size"], (B, T))
    times = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(f"kernels: {kernels()}")
    print(f"pytorch {torch.__version__}: median step {med:.4f} s, {B * T / med:.0f} tokens/s")
    print(f"RESULT tokens_per_s={B * T / med:.1f} step_s={med:.5f}")


if __name__ == "__main__":
    main()
