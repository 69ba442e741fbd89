#!/usr/bin/env bash
# Property-based testing of `affinity serve` against its own OpenAPI document (issue "Hardening"):
# schemathesis (PyPI, into a virtualenv this script creates) generates valid and invalid requests
# for every operation and checks each answer: no 5xx, status codes and bodies as documented,
# invalid data rejected, valid data accepted, auth enforced.
#
#   Benchmarks/server/schemathesis.sh [MAX_EXAMPLES_PER_OPERATION] [SEED]   (defaults: 200, 1)
#   VENV=/path/to/venv Benchmarks/server/schemathesis.sh                    (reuse a virtualenv)
#
# The server runs with an admin key and an API key (schemathesis sends them), a model folder
# directory holding an iALS and an EASE model, and a fresh store; registration requests that name
# paths outside that directory must get 403. Prints schemathesis's summary and exits with its code.
set -uo pipefail
cd "$(dirname "$0")/../.."
MAX=${1:-200}
SEED=${2:-1}
VENV=${VENV:-/tmp/venv-schemathesis}
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q schemathesis || exit 1
fi
swift build -c release --product affinity >/dev/null || exit 1
BIN="$(swift build -c release --show-bin-path)/affinity"
WORK=$(mktemp -d /tmp/affinity-schemathesis-XXXXXX)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)); $("$VENV/bin/schemathesis" --version)"
"$BIN" data generate --out "$WORK/data" --users 300 --items 100 >/dev/null
"$BIN" split --input "$WORK/data/ratings.tsv" --strategy holdout --out "$WORK/split" >/dev/null
mkdir -p "$WORK/models"
"$BIN" train --split "$WORK/split" --model ials --set factors=8 --out "$WORK/models/ials" >/dev/null
"$BIN" train --split "$WORK/split" --model ease --out "$WORK/models/ease" >/dev/null
ADMIN=schemathesis-admin-key-0123456789
API=schemathesis-api-key-0123456789
echo "$ADMIN" > "$WORK/admin.key"
AFFINITY_API_KEY=$API "$BIN" serve --model "$WORK/models/ials" --store "$WORK/store.sqlite" --port 0 \
  --admin-key-file "$WORK/admin.key" --model-dir "$WORK/models" --log-level warning >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 300); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/serve.out" | head -1)
[ -n "$URL" ] || { echo "server did not start:"; cat "$WORK/serve.err"; exit 1; }
# The admin key is accepted wherever the API key is, so one header serves every operation.
"$VENV/bin/schemathesis" run "$URL/openapi.yaml" --url "$URL" --checks all \
  --header "Authorization: Bearer $ADMIN" --max-examples "$MAX" --seed "$SEED" \
  --workers 2 --report junit --report-dir "$WORK/report" --output-truncate true 2>&1 | tee "$WORK/schemathesis.log" | tail -60
status=${PIPESTATUS[0]}
echo "server errors logged: $(grep -c 'request failed' "$WORK/serve.err" || true); report: $WORK/report; log: $WORK/schemathesis.log"
exit "$status"
