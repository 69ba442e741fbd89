#!/usr/bin/env python3
"""Load figures for `affinity serve` (issue "The recommendation service"), measured with wrk.

    python3 Benchmarks/server/load.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--duration 30]

Needs `wrk` (Debian package `wrk`) and a release build (`swift build -c release`). Trains two ml-1m
iALS models (seeds 1 and 2) into a temporary folder, starts `affinity serve` on the first (HNSW index
over the item embeddings built at start, exact fold-in for users with events), and prints:

0. the overlap of served top-10 lists with exact scoring's, over all users (ANN quality);

1. GET /v1/users/{id}/recommendations?k=10, random training users, 64 connections: requests/s, p50, p99;
2. the same while a paced writer POSTs /v1/events at 500 events/s (batches of 10 every 20 ms, new
   events for random training users, so recommendations for those users switch to fold-in);
3. the same load with a model activation (hot swap) every 10 s: wrk's failed/non-2xx counts;
4. kill -9 of the server while the writer runs, a restart on the same store, and a check that
   every acknowledged event is there (count, and each acknowledged batch's users).

Standard library only; wrk is the load generator. Figures are printed as a table and as JSON.
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks", "peers"))
from peer_env import scratch_folder  # noqa: E402  (a temporary folder removed at exit)
BINARY = os.path.join(ROOT, ".build", "release", "affinity")

# Headers every request carries (`--api-key` adds Authorization).
AUTH = {}

RECS_LUA = r"""
if os.getenv("AFFINITY_AUTH") then wrk.headers["Authorization"] = os.getenv("AFFINITY_AUTH") end
local users = {}
for line in io.lines(os.getenv("AFFINITY_USERS")) do users[#users + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local u = users[(counter * 7919) % #users + 1]
  return wrk.format("GET", "/v1/users/" .. u .. "/recommendations?k=10")
end
"""


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Server:
    def __init__(self, args, log_path):
        self.log = open(log_path, "a")
        self.process = subprocess.Popen([BINARY, "serve", "--port", "0"] + args, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        m = re.search(r":(\d+)$", line.strip())
        if not m:
            # The log's end in the message: a temporary work folder is removed at exit.
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            with open(log_path, errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
            raise SystemExit(f"server did not start: {line!r}; {log_path} ends:\n{tail}")
        self.port = int(m.group(1))

    def request(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json", **AUTH})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data) if data[:1] in (b"{", b"[") else data.decode()

    def stop(self, sig=signal.SIGTERM):
        self.process.send_signal(sig)
        self.process.wait()
        self.log.close()


def wrk(port, duration, users_file, connections=64, threads=2):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(RECS_LUA)
    script.close()
    env = dict(os.environ, AFFINITY_USERS=users_file, **({"AFFINITY_AUTH": AUTH["Authorization"]} if AUTH else {}))
    out = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name,
               f"http://127.0.0.1:{port}"], env=env).stdout
    os.unlink(script.name)

    def ms(label):
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v = float(m.group(1))
        return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"), "p99_ms": ms("99%"), "requests": requests,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "raw": out,
    }


class EventWriter(threading.Thread):
    """POSTs batches of `batch` events every `period` seconds on a fixed schedule (no drift), one
    keep-alive connection; records the users of every acknowledged batch."""

    def __init__(self, port, users, items, rate=500, batch=10, prefix="w"):
        super().__init__(daemon=True)
        self.port, self.users, self.items = port, users, items
        self.batch, self.period = batch, batch / rate
        self.prefix = prefix
        self.stop_flag = threading.Event()
        self.acknowledged = []     # (user, item) of acknowledged events
        self.failed = 0
        self.sent_events = 0
        self.elapsed = 0.0

    def run(self):
        rng = random.Random(1)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        start = time.perf_counter()
        n = 0
        while not self.stop_flag.is_set():
            target = start + n * self.period
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            events = [{"user": rng.choice(self.users), "item": rng.choice(self.items), "type": "view"}
                      for _ in range(self.batch)]
            try:
                conn.request("POST", "/v1/events", body=json.dumps(events), headers={"Content-Type": "application/json", **AUTH})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    self.acknowledged += [(e["user"], e["item"]) for e in events]
                else:
                    self.failed += 1
            except Exception:
                self.failed += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if self.stop_flag.is_set():
                    break
            self.sent_events += self.batch
            n += 1
        self.elapsed = time.perf_counter() - start


def kill_while_writing(server, writer, seconds=5):
    """Starts `writer`, kills the server with SIGKILL after `seconds`, then stops the writer."""
    writer.start()
    time.sleep(seconds)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    writer.stop_flag.set()
    writer.join()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--work", default=None, help="Working folder (default: a new temporary one, removed at exit).")
    p.add_argument("--api-key", default=None, help="Run with this read-API key on (AFFINITY_API_KEY); every request carries it.")
    a = p.parse_args()
    if a.api_key:
        os.environ["AFFINITY_API_KEY"] = a.api_key
        AUTH["Authorization"] = "Bearer " + a.api_key
    cpu = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in open("/proc/cpuinfo") if ":" in l)}
    print(f"cpu: {cpu.get('model name')} (family {cpu.get('cpu family')}, model {cpu.get('model')}); read-API key {'on' if a.api_key else 'off'}")
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} missing: run `swift build -c release` first")
    if not os.path.isdir(a.split):
        raise SystemExit(f"{a.split}: split folder not found (see ../shared/data/README.md)")
    work = a.work or scratch_folder("affinity-serve-bench-")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "server.log")
    models = []
    for seed in (1, 2):
        path = os.path.join(work, f"ials-{seed}")
        if not os.path.exists(path):
            run([BINARY, "train", "--split", a.split, "--model", "ials", "--set", f"seed={seed}", "--out", path])
        models.append(path)
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(a.split, "train.tsv"))]
    rows = [r for n, r in enumerate(rows) if len(r) >= 2 and not (n == 0 and r[0] == "user")]   # PROTOCOL.md header
    users = sorted({r[0] for r in rows})
    items = sorted({r[1] for r in rows})
    users_file = os.path.join(work, "users.txt")
    with open(users_file, "w") as f:
        f.write("\n".join(users) + "\n")
    store = os.path.join(work, "store.sqlite")
    if os.path.exists(store):
        os.unlink(store)
    server = Server(["--model", models[0], "--store", store], log)
    status, second = server.request("POST", "/v1/models", {"path": models[1]})
    assert status == 201, second
    results = {"machine_cores": os.cpu_count(), "connections": a.connections, "wrk_threads": a.wrk_threads,
               "duration_s": a.duration, "users": len(users), "items": len(items)}

    # Quality of the ANN path: overlap of each user's served top-10 with exact scoring's top-10.
    exact = Server(["--model", models[0], "--store", os.path.join(work, "exact.sqlite"), "--exact"], log)
    overlap = 0
    for u in users:
        ann_items = {i["item"] for i in server.request("GET", f"/v1/users/{u}/recommendations?k=10")[1]["items"]}
        exact_items = {i["item"] for i in exact.request("GET", f"/v1/users/{u}/recommendations?k=10")[1]["items"]}
        overlap += len(ann_items & exact_items)
    results["ann_recall_at_10_vs_exact"] = overlap / (10 * len(users))
    exact.stop()
    os.unlink(os.path.join(work, "exact.sqlite"))

    wrk(server.port, 5, users_file, a.connections, a.wrk_threads)   # warm-up
    results["recommendations"] = wrk(server.port, a.duration, users_file, a.connections, a.wrk_threads)

    writer = EventWriter(server.port, users, items)
    writer.start()
    results["recommendations_with_events"] = wrk(server.port, a.duration, users_file, a.connections, a.wrk_threads)
    writer.stop_flag.set()
    writer.join()
    results["events_during_load"] = {"events_per_s": len(writer.acknowledged) / writer.elapsed,
                                      "acknowledged": len(writer.acknowledged), "failed_batches": writer.failed}

    swaps = []

    def swapper():
        ids = [1, 2]
        for n in range(1, a.duration // 10 + 1):
            time.sleep(10 if n > 1 else 5)
            t0 = time.perf_counter()
            status, body = server.request("POST", f"/v1/models/{ids[n % 2]}/activate")
            swaps.append({"status": status, "seconds": time.perf_counter() - t0, "model": ids[n % 2]})

    t = threading.Thread(target=swapper)
    t.start()
    results["recommendations_with_hot_swaps"] = wrk(server.port, a.duration, users_file, a.connections, a.wrk_threads)
    t.join()
    results["hot_swaps"] = swaps

    # kill -9 while the writer runs, restart, and look for every acknowledged event.
    _, before = server.request("GET", "/health")
    writer = EventWriter(server.port, ["kill-user-%d" % n for n in range(100000)], items)
    kill_while_writing(server, writer)
    restarted = Server(["--store", store], log)
    _, health = restarted.request("GET", "/health")
    stored = health["events"] - before["events"]
    acknowledged_users = sorted({u for u, _ in writer.acknowledged})
    missing = sum(1 for u in acknowledged_users
                  if restarted.request("GET", f"/v1/users/{u}/recommendations?k=1")[0] != 200)
    results["kill9"] = {"acknowledged_events": len(writer.acknowledged), "stored_events_after_restart": stored,
                        "acknowledged_users_checked": len(acknowledged_users), "acknowledged_users_missing": missing}
    restarted.stop()

    print(f"affinity serve on {a.split} (iALS, HNSW ef 64), wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration}s, "
          f"{os.cpu_count()} cores shared by server and load generator")
    print(f"{'run':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}")
    for key in ("recommendations", "recommendations_with_events", "recommendations_with_hot_swaps"):
        r = results[key]
        print(f"{key:<34}{r['requests_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9}{r['socket_errors']:>9}")
    print(f"ANN top-10 overlap with exact scoring, all {len(users)} users: {results['ann_recall_at_10_vs_exact']:.4f}")
    e = results["events_during_load"]
    print(f"events during load: {e['events_per_s']:.0f} events/s acknowledged ({e['acknowledged']}), failed batches {e['failed_batches']}")
    print("hot swaps: " + ", ".join(f"-> model {s['model']}: HTTP {s['status']} in {s['seconds'] * 1000:.0f} ms" for s in swaps))
    k = results["kill9"]
    print(f"kill -9: {k['acknowledged_events']} events acknowledged, {k['stored_events_after_restart']} stored after restart; "
          f"{k['acknowledged_users_missing']} of {k['acknowledged_users_checked']} acknowledged users missing")
    for r in ("recommendations", "recommendations_with_events", "recommendations_with_hot_swaps"):
        results[r].pop("raw")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
