#!/usr/bin/env python3
"""Load figures for `affinity serve --pipeline` beside one-retriever serving, measured with wrk.

    python3 Benchmarks/server/pipeline_load.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--duration 30]

Needs `wrk` (Debian package `wrk`) and a release build (`swift build -c release`). It runs
`affinity pipeline tune` on the split (EASE + iALS retrievers, 100 candidates each, the ranker it
chooses on validation, genres from ml-1m's movies.dat), adds MMR (lambda 0.8, genre similarity)
after the ranker, and drives GET /v1/users/{id}/recommendations?k=10 over every training user with
`wrk -t1 -c64` (see --wrk-threads) for each of:

1. EASE alone (one retriever, exact scoring), 2. iALS alone (one retriever, HNSW ef 64),
3. EASE + iALS -> one learned ranker (BPR) -> MMR, 4. the tuned pipeline (its ranker or ensemble) -> MMR.

wrk and the server share the machine's cores. Standard library only (the helpers of load.py).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import BINARY, ROOT, Server, run, scratch_folder, wrk  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    p.add_argument("--items", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "movies.dat"))
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--connections", type=int, default=64)
    # One wrk thread: with two, wrk's second thread takes CPU from the server on this 2-core machine and
    # its own scheduling delays enter the latencies it records (measured: the same single-ranker pipeline
    # at the same throughput, p99 70 ms with -t2 and 32 ms with -t1).
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--work", default=None, help="Working folder (default: a new temporary one, removed at exit; an existing tune is reused).")
    a = p.parse_args()
    cpu = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in open("/proc/cpuinfo") if ":" in l)}
    simd = "AVX-512" if "avx512f" in cpu.get("flags", "").split() else "AVX2" if "avx2" in cpu.get("flags", "").split() else "no AVX2"
    print(f"cpu: {cpu.get('model name')} (family {cpu.get('cpu family')}, model {cpu.get('model')}, {simd}), {os.cpu_count()} cores")
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} missing: run `swift build -c release` first")
    work = a.work or scratch_folder("affinity-pipeline-bench-")
    pipe = os.path.join(work, "pipe")
    if not os.path.exists(os.path.join(pipe, "pipeline.json")):
        run([BINARY, "pipeline", "tune", "--split", a.split, "--out", pipe, "--items", a.items, "--force"])
    with open(os.path.join(pipe, "pipeline.json")) as f:
        served = json.load(f)
    print("served pipeline: " + json.dumps(served))
    served["rerank"] = ["mmr:lambda=0.8"]
    with open(os.path.join(pipe, "served.json"), "w") as f:
        json.dump(served, f)
    # The same pipeline with one ranker (BPR when the tune kept it, else the first of its rankers).
    rankers = served["ranker"].get("models") or [served["ranker"].get("model")]
    single = dict(served, ranker=dict(served["ranker"], models=["ranker-bpr.safetensors" if "ranker-bpr.safetensors" in rankers else rankers[0]]))
    with open(os.path.join(pipe, "served-one-ranker.json"), "w") as f:
        json.dump(single, f)
    users = sorted({line.split("\t")[0] for n, line in enumerate(open(os.path.join(a.split, "train.tsv")))
                    if not (n == 0 and line.startswith("user"))})
    users_file = os.path.join(work, "users.txt")
    with open(users_file, "w") as f:
        f.write("\n".join(users) + "\n")
    runs = [("EASE alone (exact)", ["--model", os.path.join(pipe, "ease-0")]),
            ("iALS alone (HNSW ef 64)", ["--model", os.path.join(pipe, "ials-1")]),
            (f"EASE + iALS -> {single['ranker']['models'][0]} -> MMR", ["--pipeline", os.path.join(pipe, "served-one-ranker.json")]),
            (f"EASE + iALS -> {len(rankers)} ranker(s) -> MMR", ["--pipeline", os.path.join(pipe, "served.json")])]
    results = []
    for name, args in runs:
        store = os.path.join(work, "store.sqlite")
        for suffix in ("", "-wal", "-shm", ".lock"):
            if os.path.exists(store + suffix):
                os.unlink(store + suffix)
        server = Server(args + ["--store", store], os.path.join(work, "server.log"))
        status, body = server.request("GET", f"/v1/users/{users[0]}/recommendations?k=10")
        assert status == 200, body
        wrk(server.port, 5, users_file, a.connections, a.wrk_threads)   # warm-up
        r = wrk(server.port, a.duration, users_file, a.connections, a.wrk_threads)
        r.pop("raw")
        r["run"], r["retrieval"] = name, body["retrieval"]
        results.append(r)
        server.stop()
    print(f"GET /v1/users/{{id}}/recommendations?k=10 over {len(users)} users, wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration}s")
    print(f"{'run':<48}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}")
    for r in results:
        print(f"{r['run']:<48}{r['requests_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9}{r['socket_errors']:>9}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
