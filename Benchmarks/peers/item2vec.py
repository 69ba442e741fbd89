#!/usr/bin/env python3
"""Item2Vec against gensim's Word2Vec (skip-gram, negative sampling), in one run: time, tokens/s and Recall@20.

Usage (from the repository root):
    python3 Benchmarks/peers/item2vec.py [--split ml-1m-holdout-s42] [--threads 1,2] [--epochs 60]

Both train the same model (dim 64, window 10, 10 negatives, subsampling 1e-3, `--epochs` epochs, a
learning rate 0.025 -> 0.0001) on each user's train items in timestamp order, and a user is the mean of
their items' normalised vectors. Ours: `affinity evaluate --model-type item2vec --set threads=T`
(lock-free shards with T > 1). gensim: `../shared/bench/quality/peers.py`'s fit_item2vec with
workers=T, scored by the shared reference evaluator (`../shared/bench/quality/evaluate.py`). Tokens/s
counts every training token (before subsampling) of every epoch, the same count for both.
gensim comes from PyPI into $AFFINITY_PEER_VENV_GENSIM (default /tmp/affinity-venv-gensim).
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import cpu_family, ensure_venv, release_binary  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUALITY = os.path.join(ROOT, "..", "shared", "bench", "quality")
VENV = os.environ.get("AFFINITY_PEER_VENV_GENSIM", "/tmp/affinity-venv-gensim")


def gensim_run(split, epochs, threads):
    sys.path.insert(0, QUALITY)
    import common
    import evaluate as ev
    import peers
    sp = common.load_split(split)
    t = time.perf_counter()
    fitted = peers.fit_item2vec(sp, dim=64, window=10, negative=10, epochs=epochs, sample=1e-3, workers=threads)
    seconds = time.perf_counter() - t
    res = ev.evaluate_scores(sp, fitted)
    res.pop("_topk", None)
    import gensim
    return {"seconds": seconds, "recall20": res["Recall@20"], "ndcg20": res["NDCG@20"], "tokens": int(len(sp.train_u)),
            "gensim": gensim.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="ml-1m-holdout-s42")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--binary", help="affinity binary (default: build .build/release/affinity)")
    ap.add_argument("--peer-only", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer_only:
        print(json.dumps(gensim_run(a.split, a.epochs, a.peer_only)))
        return
    ensure_venv(VENV, ["numpy", "scipy", "gensim"])
    binary = release_binary(ROOT, a.binary)
    split_dir = os.path.join(ROOT, "..", "shared", "data", "splits", a.split)
    print(f"CPU: {cpu_family()}; split {a.split}; dim 64, window 10, 10 negatives, {a.epochs} epochs")
    print(f"{'threads':>7s} {'ours s':>8s} {'gensim s':>9s} {'gensim/ours':>11s} {'ours tok/s':>11s} {'gensim tok/s':>12s} "
          f"{'ours R@20':>9s} {'gensim R@20':>11s}")
    for t in [int(x) for x in a.threads.split(",")]:
        out = subprocess.run([binary, "evaluate", "--split", split_dir, "--model-type", "item2vec", "--set", "window=10",
                              "--set", "negatives=10", "--set", "dimension=64", "--set", f"epochs={a.epochs}",
                              "--set", f"threads={t}", "--json"], check=True, capture_output=True, text=True).stdout
        j = json.loads(out)
        ours_s = j["trainSeconds"]
        ours_r = next(m["recall"] for m in j["report"]["metrics"] if m["k"] == 20)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   EXTRA_SPLITS=os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "splits")))
        g = json.loads(subprocess.run([sys.executable, __file__, "--split", a.split, "--epochs", str(a.epochs), "--peer-only", str(t)],
                                      check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
        tokens = g["tokens"] * a.epochs
        print(f"{t:7d} {ours_s:8.1f} {g['seconds']:9.1f} {g['seconds'] / ours_s:11.2f} {tokens / ours_s:11,.0f} "
              f"{tokens / g['seconds']:12,.0f} {ours_r:9.4f} {g['recall20']:11.4f}", flush=True)
    print(f"(gensim {g['gensim']}; Recall@20 from our evaluator for ours and the shared reference evaluator for gensim: "
          f"both implement ../shared/PROTOCOL.md)")


if __name__ == "__main__":
    main()
