#!/usr/bin/env python3
"""Collaborative-filtering speed against the peers, in one run: Affinity vs numpy EASE and implicit.

Usage (from the repository root):
    python3 Benchmarks/peers/cf.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--threads 1,2]

It creates (once) a virtualenv with numpy, scipy and implicit from PyPI at $AFFINITY_PEER_VENV_CF
(default /tmp/affinity-venv-cf) and re-runs itself inside it, builds `affinity` in release, then for
each thread count runs on the same train.tsv:
  * EASE (lambda 500): `affinity bench cf` vs numpy float64 (the shared peer: X^T X, np.linalg.inv);
  * iALS (64 factors, 15 iterations): our seconds per iteration vs implicit's AlternatingLeastSquares
    (factors 64, regularization 10, alpha 5: the shared reference configuration), timed per iteration
    with implicit's fit callback;
  * BPR (64 factors): our seconds per epoch vs implicit's BayesianPersonalizedRanking (lr 0.005,
    verify_negative_samples), per iteration;
and prints ours, peer and the ratio peer_time / our_time (> 1 means we are faster).
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import best, ensure_venv, read_pairs  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_CF", "/tmp/affinity-venv-cf")




def load_train(path):
    import numpy as np
    import scipy.sparse as sp
    users, items, nu, ni = read_pairs(path)
    X = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(nu, ni))
    X.sum_duplicates()
    X.data[:] = 1
    return X


def peer(args):
    import numpy as np
    X = load_train(os.path.join(args.split, "train.tsv"))
    out = {}
    # EASE exactly as shared/bench/quality/peers.py (float64).
    def ease():
        Xd = X.astype(np.float64)
        G = (Xd.T @ Xd).toarray()
        G[np.diag_indices_from(G)] += 500.0
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))
        B[np.diag_indices_from(B)] = 0.0
    out["ease_fit_seconds"] = best(args.repeats, ease)

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    times = []
    last = [time.perf_counter()]

    def cb(*_):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
    m = AlternatingLeastSquares(factors=64, regularization=10.0, alpha=5.0, iterations=15, random_state=42,
                                num_threads=args.peer_threads, calculate_training_loss=False)
    last[0] = time.perf_counter()
    m.fit(X, show_progress=False, callback=cb)
    out["ials_seconds_per_iteration"] = sorted(times)[len(times) // 2]

    times.clear()
    b = BayesianPersonalizedRanking(factors=64, learning_rate=0.005, regularization=0.01, iterations=20,
                                    random_state=42, num_threads=args.peer_threads, verify_negative_samples=True)
    last[0] = time.perf_counter()
    b.fit(X, show_progress=False, callback=cb)
    out["bpr_seconds_per_epoch"] = sorted(times)[len(times) // 2]
    import implicit
    out["implicit_version"] = implicit.__version__
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.split = os.path.abspath(args.split)
    if args.peer_only:
        peer(args)
        return
    if not os.path.exists(os.path.join(args.split, "train.tsv")):
        sys.exit(f"{args.split}: no train.tsv (is ../shared/data beside the repository?)")
    ensure_venv(VENV, ["numpy", "scipy", "implicit"])
    subprocess.check_call(["swift", "build", "-c", "release", "--product", "affinity"], cwd=ROOT, stdout=subprocess.DEVNULL)
    binary = os.path.join(ROOT, ".build", "release", "affinity")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    rows = []
    for t in [int(s) for s in args.threads.split(",")]:
        ours = json.loads(subprocess.check_output([binary, "bench", "cf", "--split", args.split, "--threads", str(t),
                                                   "--only", "ease,ials,bpr", "--repeats", str(args.repeats), "--json"]))
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
        theirs = json.loads(subprocess.check_output([sys.executable, __file__, "--peer-only", "--peer-threads", str(t),
                                                     "--split", args.split, "--repeats", str(args.repeats)], env=env))
        rows.append((t, ours, theirs))
    print(f"CPU: {cpu}; split {os.path.basename(args.split)}; implicit {rows[0][2]['implicit_version']}")
    print(f"{'measure':44s} {'thr':>3s} {'ours s':>9s} {'peer s':>9s} {'peer/ours':>9s}  target")
    targets = {"ease_fit_seconds": ("EASE fit (lambda 500) vs numpy float64", "ours <= 1.5x numpy (ratio >= 0.67)"),
               "ials_seconds_per_iteration": ("iALS s/iteration vs implicit ALS", "reported as a ratio"),
               "bpr_seconds_per_epoch": ("BPR s/epoch vs implicit BPR", "reported as a ratio")}
    for t, ours, theirs in rows:
        for key, (label, target) in targets.items():
            print(f"{label:44s} {t:3d} {ours[key]:9.4f} {theirs[key]:9.4f} {theirs[key] / ours[key]:9.2f}  {target}")


if __name__ == "__main__":
    main()
