#!/usr/bin/env python3
"""SASRec against PyTorch's SASRec on a leave-last-out split, in one run: quality at equal epochs,
our four losses, the baselines, and training throughput at 1 and 2 threads.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/sasrec.py [--split ../shared/data/splits/ml-1m-last] [--epochs 20] [--skip-quality]

It creates (once) a virtualenv with torch and numpy from PyPI at $AFFINITY_PEER_VENV_TORCH (default
/tmp/affinity-venv-torch) and re-runs itself inside it. The PyTorch side is the reference script
../shared/bench/quality/torch_models.py (`sasrec`: Kang & McAuley's layout as pmixer/SASRec.pytorch,
2 blocks, 1 head, dimension 64, max length 200, dropout 0.2, full softmax cross-entropy, Adam 1e-3 with
betas 0.9/0.98, batch 128), scored by the shared reference evaluator; ours is
`affinity evaluate --model-type sasrec` with the same settings (our defaults). Both train for the same
number of epochs and keep the epoch with the best validation NDCG@10 (PyTorch validates every 5
epochs, we validate every epoch); the test target reads the validation item after the training
sequence (../shared/PROTOCOL.md).

Throughput: sequences per second of one training epoch without validation, PyTorch's own epoch timer
(OMP_NUM_THREADS=T) against `affinity bench sasrec --threads T`.
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import cpu_family, ensure_venv, run, scratch_folder  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_TORCH", "/tmp/affinity-venv-torch")
BIN = os.path.join(ROOT, ".build", "release", "affinity")
TORCH_MODELS = os.path.join(ROOT, "..", "shared", "bench", "quality", "torch_models.py")


def torch_run(split, epochs, eval_every, threads=None):
    """Runs the reference script; returns (its test metrics, its seconds per epoch)."""
    results = scratch_folder("affinity-sasrec-torch-")
    env = dict(os.environ, QUALITY_RESULTS=results, EXTRA_SPLITS=os.path.dirname(os.path.abspath(split)))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = run([sys.executable, TORCH_MODELS, "sasrec", "--split", os.path.basename(os.path.abspath(split)),
               "--epochs", str(epochs), "--eval-every", str(eval_every), "--patience", "0"], env=env)
    per_epoch = [float(x) for x in re.findall(r"\(([\d.]+)s/epoch\)", out)]
    with open(os.path.join(results, "runs.jsonl")) as f:
        runs = [json.loads(line) for line in f]
    test = [r for r in runs if r["target"] == "test"][-1]
    return test, (per_epoch[-1] if per_epoch else test.get("epoch_time_s"))


def cached(path, compute):
    """The JSON result at `path`, computed and written there first when it is not (re-runs reuse results)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    with open(path, "w") as f:
        json.dump(value, f)
    return value


def ours(split, model, settings):
    args = [BIN, "evaluate", "--split", split, "--model-type", model, "--cutoffs", "10,20", "--json"]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    return json.loads(run(args))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-last"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--losses", default="softmax,sampled-softmax,bce,gbce")
    ap.add_argument("--out", default=None, help="Folder for each run's JSON result (default: a new temporary one, removed at exit); results already there are reused.")
    a = ap.parse_args()
    ensure_venv(VENV, ["torch", "numpy"])
    import torch
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: run `swift build -c release` first")
    print(f"CPU: {cpu_family()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"split: {a.split}")

    if not a.skip_throughput:
        print("\nTraining throughput (one epoch, no validation; sequences/s):")
        print(f"{'threads':>8}{'ours':>10}{'PyTorch':>10}{'ratio':>8}")
        for t in (1, 2):
            mine = json.loads(run([BIN, "bench", "sasrec", "--split", a.split, "--threads", str(t), "--json"]))[0]
            _, torch_epoch = torch_run(a.split, 1, 1, threads=t)
            n = mine["sequences_per_second"] * mine["seconds_per_epoch"]
            theirs = n / torch_epoch
            print(f"{t:>8}{mine['sequences_per_second']:>10.0f}{theirs:>10.0f}{mine['sequences_per_second'] / theirs:>7.2f}x", flush=True)

    if a.skip_quality:
        return
    out = a.out or scratch_folder("affinity-sasrec-bench-")
    os.makedirs(out, exist_ok=True)
    print(f"results: {out}" + ("" if a.out else " (removed at exit; --out DIR keeps them)"))
    rows = []
    for name, settings in [("popularity", {}), ("itemknn", {}), ("ease", {"lambda": "500"})]:
        r = cached(os.path.join(out, f"ours-{name}.json"), lambda: ours(a.split, name, settings))
        rows.append((f"{name} {json.dumps(settings) if settings else ''}".strip(), r))
    for loss in a.losses.split(","):
        r = cached(os.path.join(out, f"ours-sasrec-{loss}-{a.epochs}.json"),
                   lambda: ours(a.split, "sasrec", {"epochs": a.epochs, "patience": 0, "loss": loss}))
        rows.append((f"sasrec loss={loss}, {a.epochs} epochs", r))
    test = cached(os.path.join(out, f"torch-sasrec-{a.epochs}.json"), lambda: torch_run(a.split, a.epochs, 5)[0])
    print(f"\nTest target of {os.path.basename(os.path.abspath(a.split))} (validation item in the history; settings chosen on validation):")
    print(f"{'model':<46}{'HR@10':>8}{'NDCG@10':>9}{'HR@20':>8}{'NDCG@20':>9}{'train s':>9}")
    for name, r in rows:
        m = {c["k"]: c for c in r["report"]["metrics"]}
        print(f"{name:<46}{m[10]['hr']:>8.4f}{m[10]['ndcg']:>9.4f}{m[20]['hr']:>8.4f}{m[20]['ndcg']:>9.4f}{r.get('trainSeconds') or 0:>9.1f}")
    mt = test["metrics"]
    print(f"{'PyTorch SASRec (reference script), ' + str(a.epochs) + ' epochs':<46}{mt['HR@10']:>8.4f}{mt['NDCG@10']:>9.4f}"
          f"{mt['HR@20']:>8.4f}{mt['NDCG@20']:>9.4f}{test['train_time_s']:>9.1f}")
    print(f"  (PyTorch kept epoch {test['params'].get('best_epoch_by_valid_ndcg10')} by validation NDCG@10; its validation curve"
          f" (epoch, NDCG@10, HR@10): {test.get('valid_curve_ndcg10_hr10')})")


if __name__ == "__main__":
    main()
