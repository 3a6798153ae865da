#!/usr/bin/env bash
# Keeps the benchmarks working, cheaply: runs the load generator for a second against a real
# `mooring serve` (debug build, embedded engine, temporary data directory) and checks that appends
# were acknowledged and none failed. Timings never gate: only "did it work" does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The test command has built these already; build whichever is missing.
bin_dir="${CARGO_TARGET_DIR:-$root/target}/debug"
for bin in mooring mooring-bench; do
  [ -x "$bin_dir/$bin" ] || cargo build --locked -p "$bin"
done

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin_dir/mooring" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --engine embedded \
  >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log" >&2; echo "bench smoke: the server did not start" >&2; exit 1; fi
  sleep 0.1
done

"$bin_dir/mooring-bench" durable-appends --url "http://127.0.0.1:$port" --label mooring \
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
