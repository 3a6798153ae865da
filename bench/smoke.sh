#!/usr/bin/env bash
# Keeps the benchmarks working, cheaply: runs every scenario of the load generator at a tiny size
# against a real `mooring serve` (debug build, embedded engine, temporary data directory) and
# checks that appends were acknowledged, events delivered, none failed, and no subscriber saw a
# gap or a duplicate. Timings never gate: only "did it work" does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The test command has built these already; build whichever is missing.
bin_dir="$target_dir/debug"
for bin in mooring mooring-bench; do
  [ -x "$bin_dir/$bin" ] || cargo build --locked -p "$bin"
done

work="$(mktemp -d)"
trap 'stop_server; rm -rf "$work"' EXIT

port="$(free_port)"
"$bin_dir/mooring" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --engine embedded \
  >"$work/server.log" 2>&1 &
server_pid=$!
bench="$bin_dir/mooring-bench"
# Only a server that exited stops the smoke run here: one still starting after the wait is left
# to the runs below.
if ! wait_for_port "$port" "$server_pid" && ! kill -0 "$server_pid" 2>/dev/null; then
  cat "$work/server.log" >&2; echo "bench smoke: the server did not start" >&2; exit 1
fi

"$bench" durable-appends --url "http://127.0.0.1:$port" --label mooring \
  --producers 4 --streams 2 --duration-secs 1 --warmup-secs 0 --json "$work/result.json"

python3 - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
problems = []
if r.get("appends", 0) <= 0:
    problems.append("no append was acknowledged")
if r.get("errors", 1) != 0:
    problems.append(f"{r.get('errors')} appends failed: {r.get('error_samples')}")
if problems:
    sys.exit("bench smoke: " + "; ".join(problems))
print(f"bench smoke: {r['appends']} appends, 0 errors")
PY

# The realtime scenarios, tiny: each must finish without errors, deliver what it sent, and see no
# gap and no duplicate (resume-storm also fails by itself on either).
url="http://127.0.0.1:$port"
common=(--url "$url" --server-pid "$server_pid" --no-progress)
"$bench" token-streaming "${common[@]}" --runs 3 --subscribers 2 --duration-secs 1 --warmup-secs 0 \
  --json "$work/tokens.json"
"$bench" fan-out "${common[@]}" --subscribers 20 --rate 20 --duration-secs 1 --warmup-secs 0 \
  --json "$work/fanout.json"
"$bench" idle-connections "${common[@]}" --connections 50 --sessions 5 --settle-secs 0 \
  --json "$work/idle.json"
"$bench" resume-storm "${common[@]}" --subscribers 40 --sessions 4 --rate 40 --before-secs 1 \
  --after-secs 0 --json "$work/storm.json"
"$bench" catch-up "${common[@]}" --answers 3 --tokens 50 --repeats 1 --json "$work/catchup.json"
"$bench" ws-limit --readers 10 --duration-secs 1 --warmup-secs 0 --no-progress --json "$work/wslimit.json"

python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def load(name):
    with open(os.path.join(work, name)) as f:
        return json.load(f)
problems = []
t = load("tokens.json")
if t["deliveries"] <= 0 or t["errors"] or t["check"]["gaps"] or t["check"]["duplicates"]:
    problems.append(f"token-streaming: {t['deliveries']} deliveries, {t['errors']} errors {t['error_samples']}, check {t['check']}")
f = load("fanout.json")
if f["deliveries"] <= 0 or f["errors"] or f["check"]["gaps"] or f["check"]["duplicates"]:
    problems.append(f"fan-out: {f['deliveries']} deliveries, {f['errors']} errors {f['error_samples']}, check {f['check']}")
i = load("idle.json")
if i["connections"] != i["connections_asked"] or i["errors"]:
    problems.append(f"idle-connections: {i['connections']} of {i['connections_asked']} open, {i['error_samples']}")
s = load("storm.json")
if s["caught_up"] != s["subscribers"] or s["check"]["gaps"] or s["check"]["duplicates"] or s["incomplete"]:
    problems.append(f"resume-storm: {s['caught_up']}/{s['subscribers']} caught up, check {s['check']}, incomplete {s['incomplete']}")
c = load("catchup.json")
if c["replay_events"] != c["log_events"] or not c["view_ms"]:
    problems.append(f"catch-up: replayed {c['replay_events']} of {c['log_events']} events")
w = load("wslimit.json")
if w["frames"] <= 0:
    problems.append("ws-limit: no frame arrived")
if problems:
    sys.exit("bench smoke: " + "; ".join(problems))
print("bench smoke: realtime scenarios ran; 0 gaps, 0 duplicates")
PY
