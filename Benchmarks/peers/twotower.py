#!/usr/bin/env python3
"""Two-tower training throughput against PyTorch (CPU), in one run, same data and architecture.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/twotower.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--threads 1,2] [--epochs 1]

It creates (once) a virtualenv with torch and numpy from PyPI at $AFFINITY_PEER_VENV_TORCH (default
/tmp/affinity-venv-torch) and re-runs itself inside it. For each thread count it trains, on the
split's train.tsv pairs, the architecture of ../shared/bench/quality/torch_models.py (per tower: ID
embedding 64 -> Linear 128 -> ReLU -> Linear 64 -> LayerNorm -> L2-normalise; in-batch softmax,
temperature 0.2, logQ correction, batch 1024, Adam 1e-3):
  * PyTorch: that code's training loop (torch.set_num_threads(T)), timed per epoch;
  * Affinity: `affinity train --model two-tower` with the same settings (accidental hits not masked and
    dense Adam, as PyTorch does), its per-epoch time read from the progress line;
and prints training examples per second for both and the ratio ours / PyTorch (> 1: we are faster).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import ensure_venv, read_pairs  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_TORCH", "/tmp/affinity-venv-torch")
BINARY = os.path.join(ROOT, ".build", "release", "affinity")


def torch_epochs(users, items, n_users, n_items, threads, epochs, temp=0.2, batch=1024, lr=1e-3, seed=42):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)

    class Tower(nn.Module):
        def __init__(self, n, d=64, h=128):
            super().__init__()
            self.emb = nn.Embedding(n, d)
            nn.init.normal_(self.emb.weight, std=0.1)
            self.mlp = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d), nn.LayerNorm(d))

        def forward(self, ids):
            return F.normalize(self.mlp(self.emb(ids)), dim=-1)

    ut, it = Tower(n_users), Tower(n_items)
    opt = torch.optim.Adam(list(ut.parameters()) + list(it.parameters()), lr=lr)
    U, I = torch.tensor(users), torch.tensor(items)
    n = len(U)
    freq = np.bincount(np.array(items), minlength=n_items) / n
    logq = torch.from_numpy(np.log(np.maximum(freq, 1e-12)).astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        for b in range(0, n, batch):
            idx = perm[b:b + batch]
            u, v = ut(U[idx]), it(I[idx])
            logits = u @ v.T / temp - logq[I[idx]].unsqueeze(0)
            loss = F.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def affinity_epochs(split, threads, epochs):
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run([BINARY, "train", "--split", split, "--model", "two-tower", "--out", out + "/m", "--force",
                            "--set", f"epochs={epochs}", "--set", f"threads={threads}", "--set", "temperature=0.2",
                            "--set", "logQ=true", "--set", "maskAccidentalHits=false", "--set", "lazyAdam=false"],
                           capture_output=True, text=True, check=True)
    # Epoch-end lines: "two-tower done: ..., 4.52 s elapsed" (one epoch) or "two-tower epoch 2/3 done:
    # ..., 9.10 s elapsed" (time since the fit started); each epoch's time is the difference.
    # ("1 min 05 s elapsed" past a minute: whole seconds there, so keep the run's epochs short, as
    # the default single epoch is.)
    elapsed = [60 * float(m or 0) + float(s) for m, s in
               re.findall(r"two-tower (?:done|epoch \d+/\d+ done): [^\n]*?(?:(\d+) min )?([\d.]+) s elapsed", r.stderr)]
    if not elapsed:
        raise SystemExit("no epoch-end line in affinity's output:\n" + r.stderr[-2000:])
    return [b - a for a, b in zip([0.0] + elapsed, elapsed)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    ensure_venv(VENV, ["torch", "numpy"])
    import torch
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} missing: run `swift build -c release` first")
    users, items, nu, ni = read_pairs(os.path.join(a.split, "train.tsv"))
    n = len(users)
    print(f"two-tower training throughput on {a.split}: {n} pairs, {nu} users, {ni} items; torch {torch.__version__}")
    print(f"{'threads':>7} {'Affinity ex/s':>14} {'PyTorch ex/s':>13} {'ratio':>6}")
    for t in [int(x) for x in a.threads.split(",")]:
        ours = affinity_epochs(a.split, t, a.epochs)
        theirs = torch_epochs(users, items, nu, ni, t, a.epochs)
        o, th = n / min(ours), n / min(theirs)
        print(f"{t:>7} {o:>14,.0f} {th:>13,.0f} {o / th:>6.2f}   (best epoch: {min(ours):.2f} s vs {min(theirs):.2f} s)")


if __name__ == "__main__":
    main()
