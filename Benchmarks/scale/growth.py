#!/usr/bin/env python3
"""How each cost grows with the number of interactions, beside the peers, in one run.

Usage (from the repository root):
    python3 Benchmarks/scale/growth.py [--sizes 1000000,10000000,50000000] [--work /tmp/affinity-scale]
                                       [--threads 2] [--parts load,ials,bpr,ease,hnsw,eval] [--no-peers]

For each size N it generates (once, kept in WORK) a synthetic log with `affinity data generate`
(200,000 items, 32 taste clusters, power-law popularity, timestamps; 1,000,000 users, or N/10 for
N < 10M so that users keep about 10 interactions each), splits it (holdout, ratings >= 4), then
measures on the split's train.tsv:
  * load:  `affinity data stats` (parse into columns + CSR) time and peak RSS, vs pandas.read_csv +
           scipy CSR (the peer process measures its own peak RSS);
  * ials:  `affinity bench cf --only ials` s/iteration (64 factors, our defaults:
           alpha 4, regularization 10) vs implicit's ALS (64 factors, regularization 10,
           alpha 5: the shared reference), median of the timed iterations (alpha and the
           regularization do not change the cost of an iteration);
  * bpr:   `affinity bench cf --only bpr` s/epoch (64 factors, our defaults) vs implicit's BPR
           (64 factors, verify_negative_samples; learning rate and regularization do not change the cost);
  * ease:  `affinity train --model sparse-ease` (neighbors 256, gramKeep 1024) time and peak RSS;
           no peer: dense EASE needs 3 x items^2 floats (480 GB at 200,000 items) and refuses;
  * hnsw:  HNSW16 (efConstruction 200) build over the iALS item factors (64-d, inner product) vs
           hnswlib on the same .npy, same M, efConstruction and threads;
  * eval:  `affinity evaluate --sample-users 10000` (full ranking over every item) of that iALS model.
Then prints a table per measure and the fitted growth exponent b of time ~ N^b (least squares on
log-log over the sizes measured). Peak RSS comes from wait4() on each child process.

The peers come from PyPI into a virtualenv at $AFFINITY_PEER_VENV_SCALE (default
/tmp/affinity-venv-scale), created on first use; they are never project dependencies.
Every figure holds only for the CPU printed first.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
from peer_env import cpu_family, ensure_venv, release_binary  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_SCALE", "/tmp/affinity-venv-scale")
ITEMS = 200_000


def measured(cmd, env=None):
    """Runs cmd; returns (stdout, wall seconds, peak RSS bytes of that process). Exits on failure."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    # stderr goes to a file, so a chatty child cannot fill a pipe nobody reads while stdout is read.
    with tempfile.TemporaryFile() as err_file:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, env=env)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err_file.seek(0)
            sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err_file.read().decode(errors='replace')[-3000:]}")
    return out.decode(), seconds, usage.ru_maxrss * 1024


# ---------------------------------------------------------------- peer side (inside the venv)

def peer_load(path):
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    t = time.perf_counter()
    df = pd.read_csv(path, sep="\t", usecols=[0, 1], dtype=str)
    users, user_ids = pd.factorize(df.iloc[:, 0])
    items, item_ids = pd.factorize(df.iloc[:, 1])
    del df
    x = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(len(user_ids), len(item_ids)))
    x.sum_duplicates()
    x.data[:] = 1
    return x, time.perf_counter() - t


def peer(args):
    import resource
    x, load_seconds = peer_load(args.train)
    out = {"load_seconds": load_seconds, "load_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    import implicit
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    out["implicit_version"] = implicit.__version__
    times = []
    last = [0.0]

    def cb(*_):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
    if "ials" in args.parts:
        m = AlternatingLeastSquares(factors=64, regularization=10.0, alpha=5.0, iterations=args.iterations, random_state=42,
                                    num_threads=args.threads, calculate_training_loss=False)
        last[0] = time.perf_counter()
        m.fit(x, show_progress=False, callback=cb)
        out["ials"] = sorted(times)[len(times) // 2]
    if "bpr" in args.parts:
        times.clear()
        b = BayesianPersonalizedRanking(factors=64, learning_rate=0.005, regularization=0.01, iterations=args.iterations,
                                        random_state=42, num_threads=args.threads, verify_negative_samples=True)
        last[0] = time.perf_counter()
        b.fit(x, show_progress=False, callback=cb)
        out["bpr"] = sorted(times)[len(times) // 2]
    if "hnsw" in args.parts and args.vectors:
        import hnswlib
        import numpy as np
        v = np.load(args.vectors).astype(np.float32)
        index = hnswlib.Index(space="ip", dim=v.shape[1])
        t = time.perf_counter()
        index.init_index(max_elements=v.shape[0], M=16, ef_construction=200, random_seed=42)
        index.set_num_threads(args.threads)
        index.add_items(v, np.arange(v.shape[0]), num_threads=args.threads)
        out["hnsw"] = time.perf_counter() - t
    print(json.dumps(out))


# ---------------------------------------------------------------- our side

def prepare(binary, work, n):
    users = 1_000_000 if n >= 10_000_000 else max(1000, n // 10)
    folder = os.path.join(work, f"n{n}")
    data = os.path.join(folder, "data")
    split = os.path.join(folder, "split")
    gen = {}
    if not os.path.exists(os.path.join(data, "ratings.tsv")):
        out, seconds, rss = measured([binary, "data", "generate", "--users", str(users), "--items", str(ITEMS),
                                      "--interactions", str(n), "--clusters", "32", "--out", data, "--force"])
        gen = {"generate_seconds": seconds, "generate_peak_rss": rss}
        print(out.strip(), file=sys.stderr)
    if not os.path.exists(os.path.join(split, "train.tsv")):
        measured([binary, "split", "--input", os.path.join(data, "ratings.tsv"), "--strategy", "holdout", "--out", split, "--force"])
    return folder, split, gen


def ours(binary, folder, split, parts, threads):
    r = {}
    train = os.path.join(split, "train.tsv")
    if "load" in parts:
        out, _, rss = measured([binary, "data", "stats", "--input", train, "--json"])
        r["load"] = json.loads(out)["loadSeconds"]
        r["load_rss"] = rss
    cf = [p for p in ("ials", "bpr") if p in parts]
    if cf:
        out, _, _ = measured([binary, "bench", "cf", "--split", split, "--threads", str(threads), "--only", ",".join(cf),
                              "--als-iterations", "3", "--bpr-epochs", "3", "--json"])
        j = json.loads(out)
        if "ials" in cf:
            r["ials"] = j["ials_seconds_per_iteration"]
        if "bpr" in cf:
            r["bpr"] = j["bpr_seconds_per_epoch"]
    if "ease" in parts:
        _, seconds, rss = measured([binary, "train", "--split", split, "--model", "sparse-ease", "--set", f"threads={threads}",
                                    "--out", os.path.join(folder, "sparse-ease"), "--force"])
        r["ease"] = seconds
        r["ease_rss"] = rss
    vectors = None
    if "hnsw" in parts or "eval" in parts:
        model = os.path.join(folder, "ials")
        if not os.path.exists(os.path.join(model, "model.safetensors")):
            measured([binary, "train", "--split", split, "--model", "ials", "--set", "iterations=3", "--set", f"threads={threads}",
                      "--out", model, "--force"])
        vectors = os.path.join(folder, "ials-items.npy")
        measured([binary, "model", "export", model, "--what", "item-embeddings", "--out", vectors, "--force"])
        if "hnsw" in parts:
            out, _, _ = measured([binary, "index", "build", "--vectors", vectors, "--metric", "ip", "--spec", "HNSW16",
                                  "--set", "efConstruction=200", "--threads", str(threads),
                                  "--out", os.path.join(folder, "items.hnsw"), "--force", "--json"])
            r["hnsw"] = json.loads(out)["build_s"]
        if "eval" in parts:
            out, _, _ = measured([binary, "evaluate", "--model", model, "--split", split, "--sample-users", "10000",
                                  "--threads", str(threads), "--json"])
            r["eval"] = json.loads(out)["report"]["seconds"]
    return r, vectors


def exponent(points):
    pts = [(math.log(n), math.log(t)) for n, t in points if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000,50000000")
    ap.add_argument("--work", default="/tmp/affinity-scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="load,ials,bpr,ease,hnsw,eval")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--binary", help="affinity binary (default: build .build/release/affinity)")
    ap.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    ap.add_argument("--vectors", help=argparse.SUPPRESS)
    ap.add_argument("--iterations", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.parts = args.parts.split(",")
    if args.peer_only:
        peer(args)
        return
    if not args.no_peers:
        ensure_venv(VENV, ["numpy", "scipy", "pandas", "implicit", "hnswlib"])
    binary = release_binary(ROOT, args.binary)
    os.makedirs(args.work, exist_ok=True)
    rows = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        folder, split, gen = prepare(binary, args.work, n)
        r, vectors = ours(binary, folder, split, args.parts, args.threads)
        r.update(gen)
        p = {}
        if not args.no_peers:
            t = str(args.threads)
            env = dict(os.environ, OPENBLAS_NUM_THREADS=t, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t)
            cmd = [sys.executable, __file__, "--peer-only", "--train", os.path.join(split, "train.tsv"),
                   "--threads", t, "--parts", ",".join(args.parts)]
            if vectors:
                cmd += ["--vectors", vectors]
            out, _, _ = measured(cmd, env=env)
            p = json.loads(out.strip().splitlines()[-1])
        meta = json.load(open(os.path.join(split, "meta.json")))
        rows[n] = (r, p, meta)
        print(f"# n={n}: ours {json.dumps(r)} peer {json.dumps(p)}", file=sys.stderr, flush=True)

    print(f"CPU: {cpu_family()}; threads {args.threads}; implicit {next((v[1].get('implicit_version') for v in rows.values() if v[1]), '-')}")
    labels = [("load", "load train.tsv into CSR (s)", "pandas+scipy"), ("ials", "iALS s/iteration (64 factors)", "implicit"),
              ("bpr", "BPR s/epoch (64 factors)", "implicit"), ("ease", "sparse-ease fit incl. load (s)", None),
              ("hnsw", "HNSW16 efC200 build over item factors (s)", "hnswlib"), ("eval", "evaluate 10,000 sampled users (s)", None)]
    print(f"{'measure':44s} {'interactions':>12s} {'train rows':>11s} {'ours':>9s} {'peer':>9s} {'peer/ours':>9s}  memory")
    for key, label, peer_name in labels:
        if key not in args.parts:
            continue
        peer_key = "load_seconds" if key == "load" else key
        for n, (r, p, meta) in rows.items():
            if key not in r:
                continue
            theirs = p.get(peer_key)
            memory = ""
            if key == "load":
                memory = f"ours {r['load_rss'] / 1e9:.2f} GB" + (f", peer {p['load_peak_rss'] / 1e9:.2f} GB" if p else "")
            if key == "ease":
                memory = f"{r['ease_rss'] / 1e9:.2f} GB"
            train_rows = meta.get("train_rows") or (meta.get("train") or {}).get("rows", 0)
            peer_text = f"{theirs:9.3f}" if theirs else f"{'-':>9s}"
            ratio = f"{theirs / r[key]:9.2f}" if theirs else f"{'-':>9s}"
            print(f"{label:44s} {n:12,d} {train_rows:>11,} {r[key]:9.3f} {peer_text} {ratio}  {memory}")
        ours_b = exponent([(n, r.get(key)) for n, (r, _, _) in rows.items()])
        peer_b = exponent([(n, p.get(peer_key)) for n, (_, p, _) in rows.items()])
        line = f"{'':44s} growth exponent (time ~ interactions^b): ours {ours_b:.2f}" if ours_b is not None else ""
        if line and peer_b is not None and peer_name:
            line += f", {peer_name} {peer_b:.2f}"
        if line:
            print(line)

if __name__ == "__main__":
    main()
