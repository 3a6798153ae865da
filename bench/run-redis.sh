#!/usr/bin/env bash
# Token streaming on the Redis engine: one node, then three nodes on one Redis (agents and
# subscribers spread over the nodes in turn, so most deliveries cross nodes through Redis), and
# the embedded engine at the same load for comparison. Redis runs with `appendonly yes` and
# `appendfsync always`: every acknowledged append is on disk, as on the embedded engine.
#
#   bench/run-redis.sh            # results in bench/results/<date>/, tables on stdout
#
#   BENCH_RUNS       concurrent runs (sessions, agents)            [200]
#   BENCH_SECS       measured seconds per run                      [10]
#   BENCH_ROLLUP     the nodes' rollup windows, ms                 [0 40]
#   BENCH_NO_BUILD=1 use the release binaries already built
#   BENCH_SCRATCH    where Redis and the nodes keep their files     [~/.cache/mooring-bench]
#   BENCH_OUT        where results go                               [bench/results/<date>]
set -euo pipefail

source "$(dirname "$0")/lib.sh"
runs="${BENCH_RUNS:-200}"
secs="${BENCH_SECS:-10}"
rollups="${BENCH_ROLLUP:-0 40}"

make_dirs
work="$(mktemp -d "$scratch/redis.XXXXXX")"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
raise_open_files

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 2; }
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then build_release; fi

wait_port() { # port pid
  wait_for_port "$1" "$2" && return 0
  echo "nothing listens on $1" >&2
  return 1
}

start_redis() {
  redis_port="$(free_port)"
  mkdir -p "$work/redis"
  rm -rf "${work:?}/redis/"*
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" \
    --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_port "$redis_port" "$redis_pid"
}

start_node() { # engine rollup -> appends to urls and node_pids
  local port
  port="$(free_port)"
  mkdir -p "$work/node-$port"
  "$mooring" serve --listen "127.0.0.1:$port" --data-dir "$work/node-$port" --engine "$1" \
    --rollup-window-ms "$2" >"$work/node-$port.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$port" "$pid"
  urls+=("http://127.0.0.1:$port")
  node_pids+=("$pid")
}

run() { # label nodes engine rollup
  local label="$1" nodes="$2" engine="$3" rollup="$4"
  urls=(); node_pids=()
  local all_pids
  if [ "$engine" = redis ]; then
    start_redis
    for _ in $(seq 1 "$nodes"); do start_node "redis://127.0.0.1:$redis_port" "$rollup"; done
    all_pids="$(IFS=,; echo "${node_pids[*]}"),$redis_pid"
  else
    start_node embedded "$rollup"
    all_pids="${node_pids[0]}"
  fi
  say "$label: $runs runs, rollup $rollup ms"
  "$bench" token-streaming --url "$(IFS=,; echo "${urls[*]}")" --server-pid "$all_pids" \
    --runs "$runs" --duration-secs "$secs" --warmup-secs 3 --no-progress \
    --label "$label, rollup $rollup ms" --json "$out/redis-tokens-$label-r$rollup.json" || true
  stop_all
}

for rollup in $rollups; do
  run embedded-1 1 embedded "$rollup"
  run redis-1 1 redis "$rollup"
  run redis-3 3 redis "$rollup"
done
python3 - "$out" <<'TABLE'
import glob, json, sys
print("| nodes (engine), rollup | runs × subscribers | deliveries | p50 | p99 | p999 | gaps / dups | CPU nodes + Redis / generator / other |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(sys.argv[1] + "/redis-tokens-*.json")):
    d = json.load(open(path))
    lat, cpu, check = d["latency"], d["cpu"], d["check"]
    ms = lambda us: f"{us / 1000:.2f} ms"
    print(f"| {d['label']} | {d['runs']} × {d['subscribers_per_run']} | {d['deliveries']:,} of {d['deliveries_expected']:,} "
          f"| {ms(lat['p50_us'])} | {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {check['gaps']} / {check['duplicates']} "
          f"| {cpu['server_cpu_percent']} % / {cpu['generator_cpu_percent']} % / {cpu['other_cpu_percent']} % |")
TABLE
