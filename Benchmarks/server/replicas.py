#!/usr/bin/env python3
"""Several `affinity serve` replicas on one PostgreSQL (issue "PostgreSQL and pgvector"), measured.

    python3 Benchmarks/server/replicas.py [--split ../shared/data/splits/ml-1m-holdout-s42] [--duration 20]

Needs wrk (Debian package) and a release build. Starts a throwaway PostgreSQL 16 with pgvector
(scripts/postgres.sh; or --store postgres://... with PGPASSWORD set for a server of your own),
trains two ml-1m iALS models, starts replica A (--model) and replica B (following the store's
active model), and prints:

1. propagation: an event posted to A for a brand-new user, until B recommends for that user
   (B reads the database), and for a user B has cached, until B leaves the item out (the
   store's feed), 20 trials each; an activation on A until B answers with the new model (5 trials);
2. wrk on both replicas at once (two wrk processes) while writers post 500 events/s in all
   (250/s to each): total requests/s, worst p99, non-2xx;
3. kill -9 of replica A while a writer posts to it, restart: acknowledged events vs stored ones;
4. kill -9 of PostgreSQL itself (postmaster and backends) while a writer posts to A: answers
   during the outage (writes 503, recommendations 200), restart, every acknowledged event stored;
5. event ingestion throughput into SQLite and PostgreSQL (one server, wrk POSTing batches of 1
   and of 100 events, 16 connections).

Standard library only, plus psql from the same PostgreSQL for counting stored events.
"""
import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (Server, wrk, EventWriter)

ROOT = load.ROOT
BINARY = load.BINARY

POST_LUA = r"""
local batch = tonumber(os.getenv("AFFINITY_BATCH"))
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local parts = {}
  for n = 1, batch do
    parts[n] = string.format('{"user":"ing-%d-%d","item":"i%d","type":"view"}', counter % 5000, n, (counter * 31 + n) % 3000)
  end
  return wrk.format(nil, "/v1/events", nil, "[" .. table.concat(parts, ",") .. "]")
end
"""


def psql(pg_bin, url, sql):
    u = urllib.parse.urlparse(url)
    out = subprocess.run([os.path.join(pg_bin, "psql"), "-h", u.hostname, "-p", str(u.port), "-U", u.username or "postgres",
                          "-d", u.path.lstrip("/"), "-qAt", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def wait_until(condition, timeout=10.0, step=0.005):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition():
            return time.perf_counter() - start
        time.sleep(step)
    return None


def wrk_post(port, batch, duration, connections=16):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(POST_LUA)
    script.close()
    out = load.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name,
                    f"http://127.0.0.1:{port}"], env=dict(os.environ, AFFINITY_BATCH=str(batch))).stdout
    os.unlink(script.name)
    rps = float(load.re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = load.re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"batch": batch, "requests_per_s": rps, "events_per_s": rps * batch, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default=os.path.join(ROOT, "..", "shared", "data", "splits", "ml-1m-holdout-s42"))
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--store", default=None, help="postgres://USER@HOST:PORT/DB of a running server (default: start one)")
    p.add_argument("--work", default=None, help="Working folder (default: a new temporary one, removed at exit).")
    a = p.parse_args()
    cpu = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in open("/proc/cpuinfo") if ":" in l)}
    print(f"cpu: {cpu.get('model name')} (family {cpu.get('cpu family')}, model {cpu.get('model')}), {os.cpu_count()} cores "
          f"shared by PostgreSQL, the replicas and wrk")
    work = a.work or load.scratch_folder("affinity-replicas-")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "server.log")
    pg_dir = None
    if a.store:
        base_url = a.store
        pg_bin = os.environ.get("AFFINITY_PG_BIN", "/usr/bin")
    else:
        env_lines = subprocess.run([os.path.join(ROOT, "scripts", "postgres.sh"), "start"], check=True, capture_output=True,
                                   text=True, env=dict(os.environ, AFFINITY_PG_VENV=os.environ.get("AFFINITY_PG_VENV", "/tmp/affinity-venv-pg"))).stdout
        for line in env_lines.splitlines():
            k, v = line.replace("export ", "", 1).split("=", 1)
            os.environ[k] = v.strip("'")
        base_url, pg_dir, pg_bin = os.environ["AFFINITY_TEST_POSTGRES"], os.environ["AFFINITY_PG_DIR"], os.environ["AFFINITY_PG_BIN"]
    db = "replicas_%d" % random.randrange(1 << 30)
    psql(pg_bin, base_url, f"CREATE DATABASE {db}")
    url = base_url.rsplit("/", 1)[0] + "/" + db
    results = {"store": url}
    try:
        models = []
        for seed in (1, 2):
            path = os.path.join(work, f"ials-{seed}")
            if not os.path.exists(path):
                load.run([BINARY, "train", "--split", a.split, "--model", "ials", "--set", f"seed={seed}", "--out", path])
            models.append(path)
        rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(a.split, "train.tsv"))]
        rows = [r for n, r in enumerate(rows) if len(r) >= 2 and not (n == 0 and r[0] == "user")]
        users = sorted({r[0] for r in rows})
        items = sorted({r[1] for r in rows})
        users_file = os.path.join(work, "users.txt")
        with open(users_file, "w") as f:
            f.write("\n".join(users) + "\n")

        A = load.Server(["--model", models[0], "--store", url, "--log-level", "warning"], log)
        B = load.Server(["--store", url, "--log-level", "warning"], log)
        assert wait_until(lambda: B.request("GET", "/health")[0] == 200, 10) is not None, "B did not follow A's model"

        # 1. Propagation.
        event_times = []
        for n in range(20):
            user = f"prop-{n}"
            t0 = time.perf_counter()
            status, _ = A.request("POST", "/v1/events", [{"user": user, "item": items[n], "type": "view"}])
            assert status == 200
            seen = wait_until(lambda: B.request("GET", f"/v1/users/{user}/recommendations?k=5")[0] == 200, 5)
            event_times.append(time.perf_counter() - t0 if seen is not None else float("inf"))
        # A user B has cached: the event reaches B through the store's feed (polled every 250 ms).
        feed_times = []
        for n in range(20):
            user = users[(n * 97) % len(users)]
            top = B.request("GET", f"/v1/users/{user}/recommendations?k=5")[1]["items"][0]["item"]
            t0 = time.perf_counter()
            assert A.request("POST", "/v1/events", [{"user": user, "item": top, "type": "purchase"}])[0] == 200
            gone = wait_until(lambda: top not in [i["item"] for i in B.request("GET", f"/v1/users/{user}/recommendations?k=5")[1]["items"]], 5)
            feed_times.append(time.perf_counter() - t0 if gone is not None else float("inf"))
        status, second = A.request("POST", "/v1/models", {"path": models[1]})
        assert status == 201, second
        ids = [A.request("GET", "/health")[1]["model"]["id"], second["id"]]
        activation_times = []
        for n in range(5):
            target = ids[(n + 1) % 2]
            t0 = time.perf_counter()
            assert A.request("POST", f"/v1/models/{target}/activate")[0] == 200
            ok = wait_until(lambda: B.request("GET", "/health")[1].get("model", {}).get("id") == target, 5)
            activation_times.append(time.perf_counter() - t0 if ok is not None else float("inf"))
        results["propagation"] = {
            "event_to_other_replica_ms": {"median": statistics.median(event_times) * 1e3, "max": max(event_times) * 1e3, "trials": 20},
            "event_for_cached_user_ms": {"median": statistics.median(feed_times) * 1e3, "max": max(feed_times) * 1e3, "trials": 20},
            "activation_to_other_replica_ms": {"median": statistics.median(activation_times) * 1e3, "max": max(activation_times) * 1e3, "trials": 5},
        }

        # 2. wrk on both replicas with events at 500/s in all.
        load.wrk(A.port, 3, users_file, 32, 1)
        load.wrk(B.port, 3, users_file, 32, 1)
        writers = [load.EventWriter(A.port, users, items, rate=250, batch=10), load.EventWriter(B.port, users, items, rate=250, batch=10)]
        for w in writers:
            w.start()
        both = {}

        def run_wrk(name, port):
            both[name] = load.wrk(port, a.duration, users_file, 32, 1)

        threads = [threading.Thread(target=run_wrk, args=("A", A.port)), threading.Thread(target=run_wrk, args=("B", B.port))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in writers:
            w.stop_flag.set()
            w.join()
        results["two_replicas"] = {
            "requests_per_s": both["A"]["requests_per_s"] + both["B"]["requests_per_s"],
            "p99_ms_worst": max(both["A"]["p99_ms"], both["B"]["p99_ms"]),
            "p50_ms": [both["A"]["p50_ms"], both["B"]["p50_ms"]],
            "non_2xx": both["A"]["non_2xx"] + both["B"]["non_2xx"],
            "socket_errors": both["A"]["socket_errors"] + both["B"]["socket_errors"],
            "events_per_s": sum(len(w.acknowledged) for w in writers) / max(w.elapsed for w in writers),
            "failed_event_batches": sum(w.failed for w in writers),
            "connections_per_replica": 32,
        }

        # 3. kill -9 of replica A during ingestion.
        writer = load.EventWriter(A.port, ["killa-%d" % n for n in range(100000)], items, rate=500, batch=5)
        writer.start()
        time.sleep(3)
        A.process.send_signal(signal.SIGKILL)
        A.process.wait()
        writer.stop_flag.set()
        writer.join()
        A = load.Server(["--store", url, "--log-level", "warning"], log)
        acked = len(writer.acknowledged)
        stored = int(psql(pg_bin, url, "SELECT count(*) FROM events WHERE user_id LIKE 'killa-%'"))
        last_users = sorted({u for u, _ in writer.acknowledged[-200:]})
        missing = sum(1 for u in last_users if B.request("GET", f"/v1/users/{u}/recommendations?k=1")[0] != 200)
        results["kill9_replica"] = {"acknowledged": acked, "stored": stored, "acknowledged_users_unknown_on_B": missing}

        # 4. kill -9 of PostgreSQL during ingestion.
        outage = {"writes": {}, "reads": {}}
        writer = load.EventWriter(A.port, ["killpg-%d" % n for n in range(100000)], items, rate=200, batch=5)
        writer.start()
        time.sleep(2)
        if pg_dir:
            data = os.path.join(pg_dir, "data")
            postmaster = int(open(os.path.join(data, "postmaster.pid")).readline())
            subprocess.run(["pkill", "-9", "-P", str(postmaster)])
            os.kill(postmaster, signal.SIGKILL)
            time.sleep(0.5)
            for n in range(10):
                s, _ = A.request("POST", "/v1/events", [{"user": "during-outage", "item": items[0], "type": "view"}])
                outage["writes"][s] = outage["writes"].get(s, 0) + 1
                s, _ = A.request("GET", f"/v1/users/{users[n]}/recommendations?k=5")
                outage["reads"][s] = outage["reads"].get(s, 0) + 1
            time.sleep(1)
            run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            port = urllib.parse.urlparse(url).port
            subprocess.run(run_as + [os.path.join(pg_bin, "pg_ctl"), "-D", data, "-l", os.path.join(pg_dir, "log", "server.log"), "-w", "-t", "60",
                                     "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {pg_dir}/socket -c max_connections=200", "start"],
                           check=True, capture_output=True)
            t0 = time.perf_counter()
            recovered = wait_until(lambda: A.request("POST", "/v1/events", [{"user": "after-outage", "item": items[0], "type": "view"}])[0] == 200, 30, 0.1)
            outage["writes_succeed_again_after_restart_s"] = recovered
            time.sleep(2)
        writer.stop_flag.set()
        writer.join()
        acked_users = {}
        for u, _ in writer.acknowledged:
            acked_users[u] = acked_users.get(u, 0) + 1
        stored_rows = psql(pg_bin, url, "SELECT user_id, count(*) FROM events WHERE user_id LIKE 'killpg-%' GROUP BY user_id")
        stored_by_user = {l.split("|")[0]: int(l.split("|")[1]) for l in stored_rows.splitlines() if l}
        lost = sum(max(0, n - stored_by_user.get(u, 0)) for u, n in acked_users.items())
        results["kill9_postgres"] = {"acknowledged": len(writer.acknowledged), "stored": sum(stored_by_user.values()),
                                     "acknowledged_lost": lost, "failed_batches": writer.failed,
                                     "during_outage": {k: {str(s): c for s, c in v.items()} if isinstance(v, dict) else v for k, v in outage.items()}}
        A.stop()
        B.stop()

        # 5. Ingestion throughput, one server, SQLite and PostgreSQL.
        ingest = []
        for kind in ("sqlite", "postgres"):
            if kind == "sqlite":
                store = os.path.join(work, "ingest.sqlite")
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(store + suffix):
                        os.unlink(store + suffix)
            else:
                idb = "ingest_%d" % random.randrange(1 << 30)
                psql(pg_bin, base_url, f"CREATE DATABASE {idb}")
                store = base_url.rsplit("/", 1)[0] + "/" + idb
            server = load.Server(["--model", models[0], "--store", store, "--log-level", "warning"], log)
            for batch in (1, 100):
                r = wrk_post(server.port, batch, a.duration // 2)
                r["store"] = kind
                ingest.append(r)
            server.stop()
        results["ingestion"] = ingest
    finally:
        if pg_dir:
            subprocess.run([os.path.join(ROOT, "scripts", "postgres.sh"), "stop", pg_dir], capture_output=True)

    pr = results["propagation"]
    print(f"event on A -> B recommends for the new user: median {pr['event_to_other_replica_ms']['median']:.0f} ms, "
          f"max {pr['event_to_other_replica_ms']['max']:.0f} ms (20 trials)")
    print(f"event on A for a user B has cached -> B leaves the item out: median {pr['event_for_cached_user_ms']['median']:.0f} ms, "
          f"max {pr['event_for_cached_user_ms']['max']:.0f} ms (20 trials)")
    print(f"activation on A -> B answers with it: median {pr['activation_to_other_replica_ms']['median']:.0f} ms, "
          f"max {pr['activation_to_other_replica_ms']['max']:.0f} ms (5 trials)")
    t = results["two_replicas"]
    print(f"two replicas, wrk -t1 -c32 -d{a.duration}s on each, events {t['events_per_s']:.0f}/s: {t['requests_per_s']:.0f} requests/s in all, "
          f"p50 {t['p50_ms'][0]:.2f}/{t['p50_ms'][1]:.2f} ms, worst p99 {t['p99_ms_worst']:.2f} ms, non-2xx {t['non_2xx']}, "
          f"socket errors {t['socket_errors']}, failed event batches {t['failed_event_batches']}")
    k = results["kill9_replica"]
    print(f"kill -9 replica A: {k['acknowledged']} events acknowledged, {k['stored']} stored")
    k = results["kill9_postgres"]
    print(f"kill -9 PostgreSQL: {k['acknowledged']} acknowledged, {k['stored']} stored, {k['acknowledged_lost']} acknowledged lost; "
          f"during the outage {k['during_outage']}")
    print(f"{'store':<10}{'batch':>6}{'requests/s':>12}{'events/s':>11}{'non-2xx':>9}")
    for r in results["ingestion"]:
        print(f"{r['store']:<10}{r['batch']:>6}{r['requests_per_s']:>12.0f}{r['events_per_s']:>11.0f}{r['non_2xx']:>9}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
