#!/usr/bin/env bash
# ThreadSanitizer run (issue "Hardening", defect 11): builds the tests and the `affinity` binary with
# -sanitize=thread in a separate scratch folder, runs the NN, model and server test suites under it,
# then starts `affinity serve` on a history-input two-tower (every request is a fold-in through
# the neural towers) and sends 4,000 concurrent fold-ins, comparing each answer with the answer
# to the same history sent alone. Prints the number of ThreadSanitizer reports (0 expected).
#
#   Benchmarks/tsan/run.sh            (about 10 minutes on 2 cores; nothing else should build meanwhile)
set -uo pipefail
cd "$(dirname "$0")/../.."
SCRATCH=.build/tsan
WORK=$(mktemp -d /tmp/affinity-tsan-XXXXXX)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs))"
# suppressions.txt holds the one race SQLite documents as harmless (its own source says so).
export TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 log_path=$WORK/tsan suppressions=$PWD/Benchmarks/tsan/suppressions.txt"

echo "== tests under ThreadSanitizer"
swift build --build-tests --sanitize=thread --scratch-path "$SCRATCH" >"$WORK/build-tests.log" 2>&1 || { tail -20 "$WORK/build-tests.log"; exit 1; }
swift test --skip-build --sanitize=thread --scratch-path "$SCRATCH" \
  --filter "StatelessInferenceTests|GradientCheckTests|HardeningModelTests|TwoTowerTests|ServiceHardeningTests|RouteTests|StoreTests|ServingModelTests" \
  >"$WORK/tests.log" 2>&1
echo "tests (exit code 66 or 1 when ThreadSanitizer reported): exit $?, $(grep -a -c '✔ Test' "$WORK/tests.log") passed, $(grep -a -c '✘ Test.*failed' "$WORK/tests.log") failed"
test_reports=$(cat "$WORK"/tsan.* 2>/dev/null | grep -c "WARNING: ThreadSanitizer" || true)
echo "ThreadSanitizer reports in the tests: $test_reports"
mkdir -p "$WORK/test-reports"; mv "$WORK"/tsan.* "$WORK/test-reports/" 2>/dev/null

echo "== affinity serve under ThreadSanitizer: concurrent two-tower fold-ins"
swift build --sanitize=thread --scratch-path "$SCRATCH" --product affinity >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; exit 1; }
BIN="$SCRATCH/debug/affinity"
"$BIN" data generate --out "$WORK/data" --users 300 --items 120 >/dev/null
"$BIN" split --input "$WORK/data/ratings.tsv" --strategy holdout --out "$WORK/split" >/dev/null
"$BIN" train --split "$WORK/split" --model two-tower --set userInput=history --set dimension=16 --set hidden=32 \
  --set epochs=2 --set batchSize=64 --out "$WORK/tt" >/dev/null 2>&1
"$BIN" serve --model "$WORK/tt" --store "$WORK/s.sqlite" --port 0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
for _ in $(seq 1 600); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o '[0-9]*$' "$WORK/serve.out" | head -1)
[ -n "$PORT" ] || { echo "server did not start:"; tail -5 "$WORK/serve.err"; exit 1; }
python3 - "$PORT" "$WORK/split/train.tsv" <<'PY'
import http.client, json, random, sys, threading
port, train = int(sys.argv[1]), sys.argv[2]
items = sorted({line.split("\t")[1] for line in open(train) if line.strip() and not line.startswith("user\t")})
rng = random.Random(7)
histories = [rng.sample(items, rng.randint(1, 12)) for _ in range(200)]
def ask(h):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/recommendations", body=json.dumps({"history": h, "k": 10}), headers={"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read(); c.close()
    return r.status, [i["item"] for i in json.loads(body)["items"]] if r.status == 200 else body
alone = [ask(h) for h in histories]
mismatches, failures, done = 0, 0, 0
lock = threading.Lock()
def worker(w):
    global mismatches, failures, done
    for n in range(w, 4000, 16):
        got = ask(histories[n % len(histories)])
        with lock:
            done += 1
            if got[0] != 200: failures += 1
            elif got != alone[n % len(histories)]: mismatches += 1
threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"concurrent fold-ins: {done}, failed: {failures}, answers differing from the sequential ones: {mismatches}")
PY
kill -TERM $SERVER; wait $SERVER; echo "server exit: $?"
server_reports=$(cat "$WORK"/tsan.* 2>/dev/null | grep -c "WARNING: ThreadSanitizer" || true)
echo "ThreadSanitizer reports in the server: $server_reports"
echo "reports and logs: $WORK"
