#!/usr/bin/env python3
"""The learned ranker against LightGBM's LambdaMART on exactly the same candidate features, one run.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/ranker.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--out /tmp/affinity-ranker]
                                       [--losses all] [--retriever ease --retriever ials]

It creates (once) a virtualenv with numpy and lightgbm from PyPI at $AFFINITY_PEER_VENV_RANKER (default
/tmp/affinity-venv-ranker) and re-runs itself inside it. Then:
  1. `affinity pipeline tune --split S --out OUT --keep-all --write-features OUT/features`: retrievers and
     one ranker per loss trained on a validation split carved from train; the candidate features of the
     ranker's training users (ranker-train.tsv) and of its validation users (ranker-valid.tsv) are written;
  2. `affinity evaluate --pipeline OUT/pipeline-LOSS.json --split S --write-recs ...` for every pipeline
     (each retriever alone, rank fusion, each loss), and once `--write-features OUT/features/test.tsv`:
     the test users' candidates from the refitted retrievers, with the same features and no labels;
  3. LightGBM LambdaMART (`objective="lambdarank"`, its native API) trained on ranker-train.tsv with early stopping on
     ranker-valid.tsv (NDCG@20), then scoring test.tsv; its top 20 per user become a recs file;
  4. every recs file is scored by the shared reference evaluator (../shared/bench/quality/evaluate.py),
     so ours and LightGBM's lists are measured by the same independent code, and the table is printed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import cpu_family, ensure_venv, run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_RANKER", "/tmp/affinity-venv-ranker")
BIN = os.path.join(ROOT, ".build", "release", "affinity")
EVALUATE = os.path.join(ROOT, "..", "shared", "bench", "quality", "evaluate.py")


def read_features(path):
    import numpy as np
    users, items, labels, rows, groups = [], [], [], [], []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        last = None
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] != last:
                groups.append(0)
                last = parts[0]
            groups[-1] += 1
            users.append(parts[0])
            items.append(parts[1])
            labels.append(int(parts[2]))
            rows.append([float(v) for v in parts[3:]])
    return header[3:], users, items, np.array(labels), np.array(rows, dtype=np.float32), groups


def reference(split, recs):
    out = run([sys.executable, EVALUATE, "--train", os.path.join(split, "train.tsv"), "--test", os.path.join(split, "test.tsv"),
               "--recs", recs, "--k", "10", "20", "--json", recs + ".json"])
    with open(recs + ".json") as f:
        return json.load(f)


def metric(result, name, k):
    return result[f"{name}@{k}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    ap.add_argument("--out", default="/tmp/affinity-ranker")
    ap.add_argument("--losses", default="all")
    ap.add_argument("--retriever", action="append", default=[])
    ap.add_argument("--items", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "movies.dat"),
                    help="item metadata for the genre features ('' for none)")
    ap.add_argument("--skip-tune", action="store_true", help="reuse OUT from an earlier run")
    args = ap.parse_args()
    ensure_venv(VENV, ["numpy", "lightgbm"])
    import lightgbm
    import numpy as np

    print(f"CPU: {cpu_family()}; lightgbm {lightgbm.__version__}")
    features = os.path.join(args.out, "features")
    if not args.skip_tune:
        cmd = [BIN, "pipeline", "tune", "--split", args.split, "--out", args.out, "--keep-all", "--write-features", features,
               "--losses", args.losses, "--force"]
        for r in args.retriever:
            cmd += ["--retriever", r]
        if args.items:
            cmd += ["--items", args.items]
        print(run(cmd))
    pipelines = ["pipeline.json"] + sorted(p for p in os.listdir(args.out) if p.startswith("pipeline-") and p.endswith(".json"))
    results = {}
    for p in pipelines:
        name = "chosen" if p == "pipeline.json" else p[len("pipeline-"):-len(".json")]
        recs = os.path.join(args.out, f"recs-{name}.tsv")
        cmd = [BIN, "evaluate", "--pipeline", os.path.join(args.out, p), "--split", args.split, "--cutoffs", "10,20",
               "--write-recs", recs, "--json"]
        if name == "rrf":
            # Rank fusion reads every retriever, so its candidates carry the features the rankers
            # were trained on (the chosen pipeline may be one retriever alone).
            cmd += ["--write-features", os.path.join(features, "test.tsv")]
        run(cmd)
        results[name] = reference(args.split, recs)

    names, _, _, y_train, x_train, g_train = read_features(os.path.join(features, "ranker-train.tsv"))
    _, _, _, y_valid, x_valid, g_valid = read_features(os.path.join(features, "ranker-valid.tsv"))
    _, users, items, _, x_test, _ = read_features(os.path.join(features, "test.tsv"))
    params = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [20], "learning_rate": 0.05, "num_leaves": 63,
              "min_data_in_leaf": 50, "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8, "seed": 1,
              "verbose": -1}
    train_set = lightgbm.Dataset(x_train, label=y_train, group=g_train, feature_name=[n.replace("#", "_") for n in names])
    valid_set = lightgbm.Dataset(x_valid, label=y_valid, group=g_valid, reference=train_set)
    model = lightgbm.train(params, train_set, num_boost_round=1000, valid_sets=[valid_set],
                           callbacks=[lightgbm.early_stopping(50, verbose=False)])
    scores = model.predict(x_test, num_iteration=model.best_iteration)
    recs = os.path.join(args.out, "recs-lightgbm.tsv")
    by_user = {}
    for u, i, s in zip(users, items, scores):
        by_user.setdefault(u, []).append((-s, i))
    with open(recs, "w") as f:
        for u, lst in by_user.items():
            lst.sort()
            for r, (_, i) in enumerate(lst[:20]):
                f.write(f"{u}\t{i}\t{r + 1}\n")
    results["lightgbm-lambdamart"] = reference(args.split, recs)
    print(f"LightGBM: {model.best_iteration} trees (early stopping on ranker-valid NDCG@20), features: {', '.join(names)}")

    print(f"\n{'pipeline':<24} {'HR@10':>7} {'Recall@20':>10} {'NDCG@20':>8}   (reference evaluator, {os.path.basename(args.split)} test)")
    for name, r in results.items():
        print(f"{name:<24} {metric(r, 'HR', 10):7.4f} {metric(r, 'Recall', 20):10.4f} {metric(r, 'NDCG', 20):8.4f}")
    chosen = results["chosen"]
    lgb = results["lightgbm-lambdamart"]
    print(f"\nthe pipeline chosen on validation (pipeline.json) against LightGBM on the same features: "
          f"NDCG@20 {metric(chosen, 'NDCG', 20):.4f} vs {metric(lgb, 'NDCG', 20):.4f} "
          f"(ratio {metric(chosen, 'NDCG', 20) / metric(lgb, 'NDCG', 20):.3f})")

if __name__ == "__main__":
    main()
