#!/usr/bin/python3
"""PyTorch DistributedDataParallel (Gloo) peer for Tandem's data-parallel benchmark.

The same Llama-style model, fp32 and foreach AdamW as bench/torch_train.py (imported from it),
trained data-parallel over N local processes. The global batch per optimizer step is
batch_size * grad_accum sequences; each rank runs grad_accum/N micro-batches of batch_size
sequences, all but the last under no_sync(), so gradients are all-reduced once per step and
DDP's bucketing overlaps that all-reduce with the last backward.

Rank 0 times each step with comm, then the same steps with no_sync() on every micro-batch
(no communication at all); the difference is the communication share backward did not hide.

    /usr/bin/python3 bench/torch_ddp.py CONFIG.toml --nproc N [--threads-per-rank K]
        [--steps S] [--warmup W] [--batch B] [--seq T] [--grad-accum G]

Prints human-readable lines, then one last line: JSON {...}.
"""
import argparse
import contextlib
import ctypes
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toml  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import torch_train as tt  # noqa: E402


def free_port():
    """A port nothing listens on now; the tiny race until rank 0 binds it is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openblas_threads():
    """OpenBLAS's own thread count: Debian's pthread OpenBLAS ignores torch.set_num_threads."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        return lib.openblas_get_num_threads()
    except (OSError, AttributeError):
        return None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def batches(rank, step, micro, B, T, vocab):
    """Random tokens seeded by (rank, step): ranks see different data, reruns see the same."""
    g = torch.Generator().manual_seed(1_000_003 * rank + step)
    return [(torch.randint(0, vocab, (B, T), generator=g),
             torch.randint(0, vocab, (B, T), generator=g)) for _ in range(micro)]


def train_step(model, opt, data, comm):
    """One optimizer step. With comm, the last micro-batch's backward all-reduces (bucketed)."""
    opt.zero_grad(set_to_none=True)
    micro = len(data)
    for i, (tok, tgt) in enumerate(data):
        sync = comm and i == micro - 1
        with contextlib.nullcontext() if sync else model.no_sync():
            # Divide by the local micro-batch count; DDP averages over ranks, so the gradient is
            # the mean over the whole global batch, as in single-process training.
            loss = model(tok, tgt)
            (loss / micro).backward()
    # Same step as torch_train.py (clip, then AdamW), so the peers time the same work.
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def worker(rank, a, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(a.threads_per_rank)
    dist.init_process_group("gloo", rank=rank, world_size=a.nproc)

    cfg = toml.load(a.config)
    mc, tc = cfg["model"], cfg.get("train", {})
    B = a.batch or tc.get("batch_size", 8)
    T = a.seq or tc.get("seq_len", 256)
    G = a.grad_accum or tc.get("grad_accum", 1)
    micro = G // a.nproc

    torch.manual_seed(0)  # identical init everywhere; DDP also broadcasts rank 0's weights
    model = DDP(tt.Llama(mc))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            foreach=True)

    def run(phase_steps, comm, first_step, times):
        for s in range(phase_steps):
            data = batches(rank, first_step + s, micro, B, T, mc["vocab_size"])  # not timed
            t0 = time.perf_counter()
            loss = train_step(model, opt, data, comm)
            dt = time.perf_counter() - t0
            if times is not None:
                times.append(dt)
        return loss

    run(a.warmup, True, 0, None)
    with_comm = []
    loss = run(a.steps, True, a.warmup, with_comm)
    # Barrier only between phases: the no-comm phase should start with every rank busy, so
    # rank 0 competes for cores just as in the comm phase. Replicas drift apart from here on
    # (unsynced grads), which does not matter for timing.
    dist.barrier()
    no_comm = []
    run(a.steps, False, a.warmup + a.steps, no_comm)
    dist.barrier()

    if rank == 0:
        med, med_nc = median(with_comm), median(no_comm)
        tokens = B * G * T
        share = (med - med_nc) / med
        print(f"kernels: {tt.kernels()}, openblas threads {openblas_threads()}")
        print(f"pytorch {torch.__version__} DDP gloo: {a.nproc} ranks x {a.threads_per_rank} "
              f"threads, global batch {B * G} seq x {T} = {tokens} tokens "
              f"({micro} micro-batches of {B} per rank), last micro-batch loss {loss:.4f}")
        print(f"median step {med:.4f} s with comm, {med_nc:.4f} s without; "
              f"{tokens / med:.0f} tokens/s; exposed comm share {share:.3f}")
        out = {"peer": "pytorch-ddp-gloo", "torch": torch.__version__,
               "blas_core": blas_core(), "nproc": a.nproc,
               "threads_per_rank": a.threads_per_rank, "global_batch_tokens": tokens,
               "tokens_per_s_median": tokens / med, "step_s_median": med,
               "step_s_nocomm_median": med_nc, "comm_exposed_share": share}
        print("JSON " + json.dumps(out), flush=True)
    dist.destroy_process_group()


def blas_core():
    """Just the OpenBLAS core name, for the JSON (tt.kernels() gives the full sentence)."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--nproc", type=int, required=True)
    ap.add_argument("--threads-per-rank", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, help="override [train].batch_size (micro-batch seqs)")
    ap.add_argument("--seq", type=int, help="override [train].seq_len")
    ap.add_argument("--grad-accum", type=int, help="override [train].grad_accum")
    a = ap.parse_args()
    if a.nproc < 1 or a.threads_per_rank < 1 or a.steps < 1 or a.warmup < 0:
        sys.exit("error: --nproc, --threads-per-rank and --steps must be >= 1, --warmup >= 0")
    tc = toml.load(a.config).get("train", {})
    G = a.grad_accum or tc.get("grad_accum", 1)
    if G % a.nproc:
        sys.exit(f"error: --nproc {a.nproc} does not divide grad_accum {G}: every rank must run "
                 f"the same number of micro-batches (set --grad-accum to a multiple of {a.nproc})")
    # Set before spawning so each child's OpenMP and (pthread) OpenBLAS read it when they load:
    # without it every rank's OpenBLAS would start one thread per core and oversubscribe.
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(a.threads_per_rank)
    mp.spawn(worker, args=(a, free_port()), nprocs=a.nproc, join=True)


if __name__ == "__main__":
    main()
