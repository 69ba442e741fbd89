#!/usr/bin/env python3
"""Our t-SNE against scikit-learn's TSNE on the same item vectors, in one run.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/tsne.py --split SPLIT [--models ials,two-tower] [--threads 1,2] [--out DIR]
    python3 Benchmarks/peers/tsne.py --vectors items.npy [--threads 1,2]

For each model type it trains the model on the split with its defaults (`affinity train`), exports
its item embeddings (`affinity model export`), L2-normalises the rows (so Euclidean distance ranks as
cosine, as `affinity report` maps them), and maps them with both tools at the same settings:
perplexity 30, early exaggeration 12, learning rate "auto", 1,000 iterations, PCA start, Barnes-Hut
with angle 0.5, the same thread count (scikit-learn's n_jobs). Both maps are scored by
scikit-learn's `trustworthiness` (k = 10) on the same input; times are the wall time of the
t-SNE alone (ours as `affinity analyze tsne` reports it, which excludes reading the file).

It creates (once) a virtualenv with scikit-learn and numpy from PyPI at $AFFINITY_PEER_VENV_SKLEARN
(default /tmp/affinity-venv-sklearn) and re-runs itself inside it.
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
    ap.add_argument("--split", help="split folder whose models' item vectors are mapped")
    ap.add_argument("--models", default="ials,two-tower")
    ap.add_argument("--vectors", help="map this .npy instead")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "affinity"))
    ap.add_argument("--out", default=None, help="keep models, vectors and maps here")
    args = ap.parse_args()
    ensure_venv(VENV, ["numpy", "scikit-learn"])
    import numpy as np
    import sklearn
    from sklearn.manifold import TSNE, trustworthiness

    out = args.out or scratch_folder("affinity-tsne-")
    os.makedirs(out, exist_ok=True)
    inputs = []
    if args.vectors:
        inputs.append(("vectors", args.vectors))
    else:
        for model in args.models.split(","):
            folder = os.path.join(out, model)
            if not os.path.exists(os.path.join(folder, "model.json")) and not os.path.exists(folder):
                run([args.binary, "train", "--split", args.split, "--model", model, "--out", folder])
            npy = os.path.join(out, model + ".npy")
            run([args.binary, "model", "export", folder, "--what", "item-embeddings", "--format", "npy", "--out", npy, "--force"])
            inputs.append((model, npy))

    print(f"CPU: {cpu_family()}; scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    rows = []
    for name, path in inputs:
        x = np.load(path).astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        normalized = os.path.join(out, name + "-normalized.npy")
        np.save(normalized, x)
        for threads in [int(t) for t in args.threads.split(",")]:
            ours_path = os.path.join(out, f"{name}-ours-{threads}.npy")
            ours = json.loads(run([args.binary, "analyze", "tsne", "--vectors", normalized, "--out", ours_path,
                                   "--threads", str(threads), "--json"]))
            y_ours = np.load(ours_path)
            tsne = TSNE(n_components=2, perplexity=30.0, early_exaggeration=12.0, learning_rate="auto", init="pca",
                        method="barnes_hut", angle=0.5, random_state=42, n_jobs=threads)
            start = time.perf_counter()
            y_theirs = tsne.fit_transform(x)
            theirs_seconds = time.perf_counter() - start
            t_ours = trustworthiness(x, y_ours, n_neighbors=10)
            t_theirs = trustworthiness(x, y_theirs, n_neighbors=10)
            rows.append((name, x.shape[0], x.shape[1], threads, ours["seconds"], theirs_seconds, t_ours, t_theirs, ours["trustworthiness"]))

    print(f"\n{'vectors':<10} {'n':>6} {'d':>4} {'thr':>3} {'ours s':>8} {'sklearn s':>9} {'speed-up':>8} "
          f"{'T ours':>7} {'T sklearn':>9} {'T diff':>7} {'T ours (own)':>12}")
    for name, n, d, threads, ts, tp, a, b, own in rows:
        print(f"{name:<10} {n:>6} {d:>4} {threads:>3} {ts:>8.2f} {tp:>9.2f} {tp / ts:>7.2f}x {a:>7.4f} {b:>9.4f} {a - b:>+7.4f} {own:>12.4f}")
    print("\nT = trustworthiness (k = 10) by scikit-learn on the same normalised vectors; 'own' is ours computed by"
          " affinity (the two agree when they match). Speed-up = scikit-learn's time / ours, same thread count.")


if __name__ == "__main__":
    main()
