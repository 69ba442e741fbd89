#!/usr/bin/env python3
"""IVF build time against faiss on the same vectors, in one run.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/ivf_build.py [--n 1000000] [--d 64] [--lists 4096] [--threads 2]

Generates (seeded) n x d clustered float32 vectors (1,000 Gaussian centres), writes them as .fvecs,
and times `affinity index build --spec IVF{lists},Flat --metric l2` (k-means++ seeding, 10 Lloyd
iterations on at most 256 points per list, then every vector assigned) against faiss
`IndexIVFFlat` train + add (random seeding, 10 iterations, 256 points per list: faiss's defaults
for IVF) with the same thread count (OpenMP). The virtualenv with numpy and faiss-cpu from PyPI is
created at $AFFINITY_PEER_VENV_SKLEARN (default /tmp/affinity-venv-sklearn).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import cpu_family, ensure_venv, run, scratch_folder  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_SKLEARN", "/tmp/affinity-venv-sklearn")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--lists", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "affinity"))
    args = ap.parse_args()
    ensure_venv(VENV, ["numpy", "faiss-cpu"])
    import faiss
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, args.d)).astype(np.float32) * 3
    x = centres[rng.integers(0, 1000, args.n)] + rng.normal(size=(args.n, args.d)).astype(np.float32)
    work = scratch_folder("affinity-ivf-")
    path = os.path.join(work, "base.fvecs")
    rows = np.empty((args.n, args.d + 1), dtype=np.float32)
    rows[:, 0] = np.array([args.d], dtype=np.int32).view(np.float32)[0]
    rows[:, 1:] = x
    rows.tofile(path)

    print(f"CPU: {cpu_family()}; faiss {faiss.__version__}, {args.threads} threads; {args.n} x {args.d}, {args.lists} lists")
    ours = json.loads(run([args.binary, "index", "build", "--vectors", path, "--metric", "l2", "--spec", f"IVF{args.lists},Flat",
                           "--threads", str(args.threads), "--out", os.path.join(work, "ivf.idx"), "--json"]))["build_s"]
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    quantizer = faiss.IndexFlatL2(args.d)
    index = faiss.IndexIVFFlat(quantizer, args.d, args.lists)
    index.train(x)
    index.add(x)
    theirs = time.perf_counter() - start
    print(f"affinity IVF{args.lists},Flat build: {ours:.1f} s; faiss IndexIVFFlat train + add: {theirs:.1f} s; "
          f"ours / faiss = {ours / theirs:.2f}x time")


if __name__ == "__main__":
    main()
