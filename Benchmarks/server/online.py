#!/usr/bin/env python3
"""Learning while serving (`affinity serve --online`), measured on ml-1m.

    python3 Benchmarks/server/online.py [--ratings ../shared/data/ml-1m/ratings.dat] [--duration 20] [--interval 2]

Needs wrk (Debian package) and a release build. Splits ml-1m (holdout, seed 42), batch-trains
online-mf on it (3 epochs), serves it with --online on a fresh SQLite store, and prints:

1. freshness: 20 users who liked the same popular movie post events for a brand-new item; the
   seconds until GET /v1/items/{new}/similar answers with neighbours, until the item is in the
   top 10 of at least one of 100 other users who liked that movie, and until a brand-new user
   whose only events are 5 of the cohort's movies gets a personal list (not the popular fallback);
2. wrk -t2 -c64 on GET /v1/users/{id}/recommendations?k=10 while a paced writer posts 1,000
   events/s (batches of 50) into the trainer: requests/s, p50, p99, non-2xx, and the lag and
   publish count during the run;
3. trainer throughput: 100,000 events posted as fast as the store takes them (batches of 500),
   then the seconds until the trainer has learned them all (events/s);
4. kill -9 of the server while the writer posts 1,000 events/s, a restart with --online on the
   same store and state: acknowledged events, events stored, and events the learner has learned
   once it caught up (affinity_online_events_learned_total must equal the stored events).

Standard library only, plus wrk. Prints the CPU family (figures hold for that CPU only).
"""
import argparse
import json
import os
import random
import re
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (Server, wrk, EventWriter, run)

ROOT = load.ROOT
BINARY = load.BINARY


def cpu():
    family = model = name = "?"
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "cpu family" and family == "?":
                family = v
            elif k == "model" and model == "?":
                model = v
            elif k == "model name" and name == "?":
                name = v
    except OSError:
        pass
    return f"{name} (family {family}, model {model}), {os.cpu_count()} cores"


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("affinity_online_") or line.startswith("affinity_events_stored"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_until(condition, timeout=60.0, step=0.05):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        v = condition()
        if v:
            return time.perf_counter() - start, v
        time.sleep(step)
    return None, None


def caught_up(port):
    m = metrics(port)
    return m.get("affinity_online_lag_events", 1) == 0 and m.get("affinity_online_catching_up", 1) == 0 and m


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratings", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ratings.dat"))
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--interval", type=float, default=2.0, help="--online-interval of the server")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    print(f"CPU: {cpu()}")
    work = load.scratch_folder("affinity-online-")
    split, model = os.path.join(work, "split"), os.path.join(work, "model")
    load.run([BINARY, "split", "--input", a.ratings, "--strategy", "holdout", "--seed", "42", "--out", split])
    t = time.perf_counter()
    load.run([BINARY, "train", "--split", split, "--model", "online-mf", "--set", f"epochs={a.epochs}", "--out", model])
    print(f"batch training online-mf, {a.epochs} epochs: {time.perf_counter() - t:.1f} s")
    train = [line.split("\t")[:2] for line in open(os.path.join(split, "train.tsv")).read().splitlines()[1:]]
    by_item = {}
    for u, i in train:
        by_item.setdefault(i, []).append(u)
    users = sorted({u for u, _ in train})
    items = sorted(by_item)
    users_file = os.path.join(work, "users.txt")
    with open(users_file, "w") as f:
        f.write("\n".join(users) + "\n")
    store = os.path.join(work, "store.sqlite")
    log = os.path.join(work, "server.log")
    args = ["--model", model, "--store", store, "--online", "--online-interval", str(a.interval)]
    server = load.Server(args, log)
    results = {"cpu": cpu(), "interval_s": a.interval}

    # 1. Freshness.
    popular = sorted(by_item, key=lambda i: -len(by_item[i]))[5]
    fans = by_item[popular]
    cohort, others = fans[:20], fans[20:120]
    fresh = f"new-item-{int(time.time())}"
    t0 = time.perf_counter()
    status, _ = server.request("POST", "/v1/events", [{"user": u, "item": fresh, "type": "view"} for u in cohort])
    assert status == 200, status

    def similar_ready():
        s, body = server.request("GET", f"/v1/items/{fresh}/similar?k=10")
        return s == 200 and len(body.get("items", [])) > 0

    def in_others():
        hits = 0
        for u in others:
            s, body = server.request("GET", f"/v1/users/{u}/recommendations?k=10")
            if s == 200 and any(x["item"] == fresh for x in body["items"]):
                hits += 1
        return hits

    similar_s, _ = wait_until(similar_ready, timeout=60)
    t_similar = time.perf_counter() - t0 if similar_s is not None else None
    others_s, hits = wait_until(in_others, timeout=60, step=0.2)
    t_others = time.perf_counter() - t0 if others_s is not None else None
    # A brand-new user: five movies the cohort liked. Answered at once by fold-in of the events
    # ("retrieval" ann/exact, not "popular"); after the next publish the user has a row of their own.
    newcomer = f"new-user-{int(time.time())}"
    cohort_set = set(cohort[:3])
    liked = sorted({i for u, i in train if u in cohort_set})[:5]
    server.request("POST", "/v1/events", [{"user": newcomer, "item": i, "type": "view"} for i in liked])
    s, body = server.request("GET", f"/v1/users/{newcomer}/recommendations?k=10")
    first_answer = (s, body.get("retrieval") if isinstance(body, dict) else None)
    results["freshness"] = {
        "similar_s": t_similar, "in_other_users_top10_s": t_others, "other_users_with_it": hits,
        "newcomer_first_answer": {"status": first_answer[0], "retrieval": first_answer[1]},
    }
    print(f"1. freshness (publish every {a.interval} s): new item in /similar after {t_similar if t_similar is None else round(t_similar, 2)} s, "
          f"in the top 10 of {hits} of 100 other fans after {t_others if t_others is None else round(t_others, 2)} s; "
          f"brand-new user with 5 events: at once status {first_answer[0]}, retrieval {first_answer[1]}")

    # 2. wrk while events stream at 1,000/s.
    load.wrk(server.port, 3, users_file, 64, 2)
    before = metrics(server.port)
    writer = load.EventWriter(server.port, users, items, rate=1000, batch=50, prefix="s")
    lags = []
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            lags.append(metrics(server.port).get("affinity_online_lag_events", 0))
            time.sleep(0.5)
    sampler = threading.Thread(target=sample, daemon=True)
    writer.start()
    sampler.start()
    r = load.wrk(server.port, a.duration, users_file, 64, 2)
    writer.stop_flag.set()
    writer.join()
    sampling.set()
    sampler.join()
    after = metrics(server.port)
    rate = writer.sent_events / writer.elapsed
    results["wrk"] = {k: r[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors")}
    results["wrk"].update({"events_per_s": rate, "events_failed_batches": writer.failed, "max_lag": max(lags) if lags else None,
                           "publishes": after["affinity_online_publishes_total"] - before["affinity_online_publishes_total"],
                           "last_publish_s": after["affinity_online_last_publish_duration_seconds"],
                           "last_publish_relinked": after['affinity_online_last_publish_items{change="relinked"}'],
                           "last_publish_moved": after['affinity_online_last_publish_items{change="moved"}']})
    print(f"2. wrk -t2 -c64 -d{a.duration}s recommendations with events at {rate:.0f}/s: {r['requests_per_s']:.0f} requests/s, "
          f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}, max lag {results['wrk']['max_lag']:.0f} events, "
          f"{results['wrk']['publishes']:.0f} publishes (the last took {results['wrk']['last_publish_s']:.2f} s, "
          f"relinked {results['wrk']['last_publish_relinked']:.0f} items and moved {results['wrk']['last_publish_moved']:.0f} in place)")

    # 3. Trainer throughput.
    wait_until(lambda: caught_up(server.port), timeout=60)
    start_learned = metrics(server.port)["affinity_online_events_learned_total"]
    rng = random.Random(3)
    t = time.perf_counter()
    posted = 0
    for _ in range(200):
        batch = [{"user": rng.choice(users), "item": rng.choice(items), "type": "view"} for _ in range(500)]
        s, _ = server.request("POST", "/v1/events", batch)
        assert s == 200
        posted += len(batch)
    post_s = time.perf_counter() - t
    done_s, m = wait_until(lambda: caught_up(server.port) if metrics(server.port)["affinity_online_events_learned_total"] - start_learned >= posted else None,
                           timeout=300)
    total_s = time.perf_counter() - t
    learned = m["affinity_online_events_learned_total"] - start_learned if m else 0
    results["throughput"] = {"posted": posted, "post_s": post_s, "learned": learned, "until_learned_s": total_s,
                             "events_per_s": learned / total_s if total_s else None}
    print(f"3. trainer: {posted} events posted in {post_s:.1f} s, all {learned:.0f} learned {total_s:.1f} s after the first: "
          f"{learned / total_s:.0f} events/s (while also publishing every {a.interval} s)")

    # 4. kill -9 while learning, restart.
    writer = load.EventWriter(server.port, users, items, rate=1000, batch=10, prefix="k")
    load.kill_while_writing(server, writer)
    acknowledged = len(writer.acknowledged)
    server = load.Server(args, log)
    ok_s, m = wait_until(lambda: caught_up(server.port), timeout=120)
    stored = m["affinity_events_stored"] if m else None
    learned = m["affinity_online_events_learned_total"] if m else None
    results["kill9"] = {"acknowledged_in_the_run": acknowledged, "stored_total": stored, "learned_total": learned,
                        "caught_up_s": ok_s}
    print(f"4. kill -9 during online training: {acknowledged} events acknowledged in the last 5 s; after restart "
          f"{stored:.0f} events stored, {learned:.0f} learned (caught up in {ok_s:.1f} s): "
          f"{'all' if learned == stored else 'NOT all'} learned")
    server.stop()
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
