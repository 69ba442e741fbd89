#!/usr/bin/env python3
"""`affinity serve` with a large model: start-up time, resident memory and wrk figures.

    python3 Benchmarks/scale/serve.py --model MODEL [--duration 30] [--connections 64] [--check-users 300]

MODEL is a saved embedding model, e.g. the iALS model `Benchmarks/scale/growth.py` trains on its
10M-interaction set (1,000,000 users x 200,000 items: WORK/n10000000/ials). Starts `affinity serve`
on it (SQLite store in a temporary folder; the HNSW index over the item embeddings is built at
start), and prints:
  * start-up seconds (model load + index build) and resident memory (VmRSS, VmHWM) after start and
    after the load;
  * the overlap of the served top-10 (HNSW) with exact scoring's (`--exact` server) on --check-users
    random users;
  * wrk -t2 -c64 on GET /v1/users/{id}/recommendations?k=10 over 100,000 random users of the model
    (target >= 5,000 requests/s, p99 < 20 ms).
Needs wrk (Debian package) and a release build. Standard library only.
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
import load  # noqa: E402
from peer_env import cpu_family, scratch_folder  # noqa: E402


def memory(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0]) * 1024
    return fields


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--check-users", type=int, default=300)
    a = p.parse_args()
    if not os.path.exists(load.BINARY):
        raise SystemExit(f"{load.BINARY} missing: run `swift build -c release` first")
    vocabulary = json.load(open(os.path.join(a.model, "vocabulary.json")))
    users, items = vocabulary["users"], vocabulary["items"]
    rng = random.Random(42)
    sample = rng.sample(users, min(100_000, len(users)))
    work = scratch_folder("affinity-scale-serve-")
    users_file = os.path.join(work, "users.txt")
    with open(users_file, "w") as f:
        f.write("\n".join(sample) + "\n")
    log = os.path.join(work, "server.log")
    print(f"CPU: {cpu_family()}; model {a.model}: {len(users):,} users, {len(items):,} items")
    start = time.perf_counter()
    server = load.Server(["--model", a.model, "--store", os.path.join(work, "store.sqlite")], log)
    exact = None
    try:
        started = time.perf_counter() - start
        after_start = memory(server.process.pid)
        exact = load.Server(["--model", a.model, "--store", os.path.join(work, "exact.sqlite"), "--exact"], log)
        overlap = 0
        checked = sample[:a.check_users]
        for u in checked:
            got = {i["item"] for i in server.request("GET", f"/v1/users/{u}/recommendations?k=10")[1]["items"]}
            want = {i["item"] for i in exact.request("GET", f"/v1/users/{u}/recommendations?k=10")[1]["items"]}
            overlap += len(got & want)
        exact.stop()
        exact = None
        load.wrk(server.port, 5, users_file, a.connections, 2)   # warm-up
        r = load.wrk(server.port, a.duration, users_file, a.connections, 2)
        after_load = memory(server.process.pid)
    finally:
        # Never leave a server holding gigabytes behind, whatever failed.
        if exact is not None:
            exact.stop()
        server.stop()
    print(f"start-up (load model + build HNSW): {started:.1f} s; resident after start {after_start['VmRSS'] / 1e9:.2f} GB, "
          f"after the load {after_load['VmRSS'] / 1e9:.2f} GB (peak {after_load['VmHWM'] / 1e9:.2f} GB)")
    print(f"served top-10 vs exact top-10 overlap on {len(checked)} users: {overlap / (10 * len(checked)):.3f}")
    print(f"wrk -t2 -c{a.connections} {a.duration} s, GET /v1/users/{{id}}/recommendations?k=10: "
          f"{r['requests_per_s']:,.0f} requests/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
          f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']} (target >= 5,000/s, p99 < 20 ms)")
    r.pop("raw")
    print(json.dumps({"startup_s": started, "memory_after_start": after_start, "memory_after_load": after_load,
                      "overlap_at_10": overlap / (10 * len(checked)), "wrk": r}))


if __name__ == "__main__":
    main()
