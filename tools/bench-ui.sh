#!/usr/bin/env bash
# Server time of `pipe ui` on a workspace with many runs (issue #16), as BENCHMARKS.md
# reports it: N real `pipe run`s of a one-stage pipeline, plus one run whose stored loss
# series has 100,000 points (a train stage's series file, written here in the format the
# recorder writes, since training 100,000 steps is not a benchmark's job). Then the median
# and worst of 20 requests per route, timed by curl against the running server.
#
#   tools/bench-ui.sh [RUNS]        # default 1000; needs target/release/pipe and curl
set -euo pipefail
RUNS=${1:-1000}
PIPE=$(cd "$(dirname "$0")/.." && pwd)/target/release/pipe
WS=$(mktemp -d)
UI=
trap '[ -n "$UI" ] && kill "$UI" 2>/dev/null; rm -rf "$WS"' EXIT
cd "$WS"
cat > pipe.yaml <<'YAML'
name: bench
params: {lr: 0.1}
stages:
  work:
    cmd: >-
      mkdir -p out && echo '{"loss": 0.5}' > out/m.json
    params: [lr]
    outs: [out/m.json]
    metrics: [out/m.json]
YAML
start=$(date +%s)
for i in $(seq 1 "$RUNS"); do "$PIPE" run --force -q --set lr="0.$i"; done
echo "made $RUNS runs in $(( $(date +%s) - start )) s"

# One run with a 100,000-point series on a train stage.
big=$(ls runs/history | grep -v produced | head -1)
python3 - "$WS/runs/history/$big" <<'PY'
import json, math, sys
d = sys.argv[1]
rec = json.load(open(f"{d}/run.json"))
rec["stages"][0]["series"] = ["loss", "valid_loss"]
json.dump(rec, open(f"{d}/run.json", "w"))
pts = [[i, 2.0 * math.exp(-i / 20000) + 0.01 * math.sin(i), 1796000000000 + i] for i in range(1, 100001)]
val = [[i, p[1] + 0.1, p[2]] for i, p in enumerate(pts[::100], 1)]
import os; os.makedirs(f"{d}/series", exist_ok=True)
json.dump([{"name": "loss", "points": pts}, {"name": "valid_loss", "points": val}], open(f"{d}/series/work.json", "w"))
PY

"$PIPE" ui --port 0 > ui.out 2>/dev/null & UI=$!
until grep -q 'pipe ui:' ui.out 2>/dev/null; do sleep 0.05; done
BASE=$(sed -n 's#pipe ui: \(http://[^/]*\)/.*#\1#p' ui.out)
second=$(ls runs/history | grep -v produced | sort -r | sed -n 2p)

time_route() {   # name path: median and max of 20 requests, in ms
  for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "$BASE$2"; done |
    sort -n | awk -v name="$1" '{t[NR]=$1*1000} END {printf "%-40s median %6.1f ms  max %6.1f ms\n", name, t[int((NR+1)/2)], t[NR]}'
}
time_route "GET / (the page)" "/"
time_route "GET /api/runs (page 1 of $RUNS runs)" "/api/runs"
time_route "GET /api/runs?page=20" "/api/runs?page=20"
time_route "GET /api/runs?pipeline=bench (all)" "/api/runs?pipeline=bench"
time_route "GET /api/runs/ID (100,000 points)" "/api/runs/$big"
time_route "GET /api/compare (100k-point run + 1)" "/api/compare?ids=$big,$second"
curl -s "$BASE/api/runs/$big" | python3 -c 'import json,sys; v=json.load(sys.stdin); print("points sent for the 100,000-point curve:", [len(c["points"]) for c in v["curves"]])'
