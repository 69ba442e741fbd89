#!/usr/bin/env python3
"""LightGCN against PyTorch's LightGCN in one run, beside EASE and iALS.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/lightgcn.py [--epochs 150] [--skip-torch] [--out DIR]

It creates (once) a virtualenv with torch and numpy from PyPI at $AFFINITY_PEER_VENV_TORCH (default
/tmp/affinity-venv-torch) and re-runs itself inside it. The PyTorch side is the reference script
../shared/bench/quality/torch_models.py (`lightgcn`: 3 layers, dimension 64, BPR with one uniform
negative, L2 1e-4 on the batch's ego embeddings, Adam 5e-3, batch 4096, full-graph propagation
every step), scored by the shared reference evaluator; it trains --epochs epochs without evaluating
on the way. Ours runs the same settings (`--set epochs=N validationUsers=0 ...`) and then its defaults
(early stopping on lent positives, refit), each timed as the wall time of `affinity train`.
ml-100k-holdout-s42 first, then ml-1m-holdout-s42 (ours, EASE and iALS; PyTorch with --torch-1m).
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import cpu_family, ensure_venv, run, scratch_folder  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_TORCH", "/tmp/affinity-venv-torch")
BIN = os.path.join(ROOT, ".build", "release", "affinity")
TORCH_MODELS = os.path.join(ROOT, "..", "shared", "bench", "quality", "torch_models.py")
SPLITS = os.path.join(ROOT, "..", "shared", "data", "splits")


def cached(path, compute):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    if path:
        with open(path, "w") as f:
            json.dump(value, f)
    return value


def torch_lightgcn(split, epochs):
    results = scratch_folder("affinity-lightgcn-torch-")
    env = dict(os.environ, QUALITY_RESULTS=results, EXTRA_SPLITS=os.path.abspath(SPLITS))
    t = time.perf_counter()
    run([sys.executable, TORCH_MODELS, "lightgcn", "--split", split, "--epochs", str(epochs), "--eval-every", "0"], env=env)
    wall = time.perf_counter() - t
    with open(os.path.join(results, "runs.jsonl")) as f:
        r = [json.loads(line) for line in f][-1]
    return {"recall20": r["metrics"]["Recall@20"], "ndcg20": r["metrics"]["NDCG@20"], "train_s": r["train_time_s"], "wall_s": wall}


def ours(split, model, settings):
    folder = scratch_folder("affinity-lightgcn-")
    args = [BIN, "train", "--split", os.path.join(SPLITS, split), "--model", model, "--out", os.path.join(folder, "m"), "--force"]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    t = time.perf_counter()
    log = run(args)
    seconds = time.perf_counter() - t
    report = json.loads(run([BIN, "evaluate", "--model", os.path.join(folder, "m"), "--split", os.path.join(SPLITS, split),
                             "--cutoffs", "20", "--json"]))
    m = [c for c in report["report"]["metrics"] if c["k"] == 20][0]
    return {"recall20": m["recall"], "ndcg20": m["ndcg"], "train_s": seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--torch-1m", action="store_true")
    ap.add_argument("--splits", default="ml-100k-holdout-s42,ml-1m-holdout-s42", help="Comma-separated splits to run.")
    ap.add_argument("--ml1m-settings", default="", help="Settings of our ml-1m run, k=v,k=v (default: the defaults).")
    ap.add_argument("--out", default=None, help="Folder for each run's JSON result; results already there are reused.")
    a = ap.parse_args()
    ensure_venv(VENV, ["torch", "numpy", "scipy"])
    import torch
    out = a.out
    if out:
        os.makedirs(out, exist_ok=True)
    print(f"CPU: {cpu_family()}; torch {torch.__version__}, {torch.get_num_threads()} threads; affinity: all cores")
    same = {"loss": "bpr", "epochs": a.epochs, "validationUsers": 0, "layers": 3, "dimension": 64, "batchSize": 4096,
            "learningRate": 0.005, "regularization": 1e-4, "negatives": 1, "weightDecay": 0}
    # BPR as the paper trains it, with our early stopping and refit (the defaults before the softmax loss).
    bpr = {"loss": "bpr", "batchSize": 4096, "weightDecay": 0, "patience": 10}
    rows = []
    ml1m = dict(kv.split("=", 1) for kv in a.ml1m_settings.split(",") if kv)
    for split in a.splits.split(","):
        key = lambda name: os.path.join(out, f"{split}-{name}.json") if out else None
        if not a.skip_torch and (split.startswith("ml-100k") or a.torch_1m):
            rows.append((split, f"PyTorch LightGCN, {a.epochs} epochs", cached(key(f"torch-{a.epochs}"), lambda: torch_lightgcn(split, a.epochs))))
        if split.startswith("ml-100k") or a.torch_1m:
            rows.append((split, f"ours, same settings ({a.epochs} epochs)", cached(key(f"same-{a.epochs}"), lambda: ours(split, "lightgcn", same))))
        if split.startswith("ml-100k"):
            rows.append((split, "ours, BPR with early stopping", cached(key("bpr"), lambda: ours(split, "lightgcn", bpr))))
        settings = ml1m if split.startswith("ml-1m") else {}
        label = "ours, " + (",".join(f"{k}={v}" for k, v in settings.items()) or "defaults")
        rows.append((split, label, cached(key("lightgcn-" + ("-".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults")),
                                  lambda: ours(split, "lightgcn", settings))))
        rows.append((split, "EASE lambda=500", cached(key("ease"), lambda: ours(split, "ease", {"lambda": 500}))))
        rows.append((split, "iALS defaults", cached(key("ials"), lambda: ours(split, "ials", {}))))
    print(f"\n{'split':22} {'model':34} {'Recall@20':>9} {'NDCG@20':>8} {'train s':>8}")
    for split, name, r in rows:
        print(f"{split:22} {name:34} {r['recall20']:9.4f} {r['ndcg20']:8.4f} {r['train_s']:8.1f}")
    torch_rows = {s: r for s, n, r in rows if n.startswith("PyTorch")}
    for split, name, r in rows:
        if name.startswith("ours") and split in torch_rows:
            t = torch_rows[split]
            print(f"{split}: {name[6:]}, ours/PyTorch Recall@20 {r['recall20'] / t['recall20']:.3f}x, training {t['train_s'] / r['train_s']:.1f}x faster")


if __name__ == "__main__":
    main()
