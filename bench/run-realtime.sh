#!/usr/bin/env bash
# The realtime scenarios at the issue's sizes, each against a freshly started release
# `mooring serve` (embedded engine, empty data directory in the scratch directory):
#
#   bench/run-realtime.sh
#
#   ws-limit           the physical reference: small frames a second from one process to 10,000
#                      local WebSocket readers
#   token-streaming    1,000 runs x 5 subscribers, 50 tokens/s, with the server's rollup at 0 and
#                      at 40 ms; then --find-max (rollup 0): the most runs with p99 under 100 ms
#   fan-out            one publisher to 10,000 subscribers of one session; then the same point
#                      against Sockudo (a Pusher-protocol server, crates.io `sockudo`), installed
#                      into the scratch directory when missing and skipped with a warning when it
#                      cannot be
#   idle-connections   10,000, 19,000 and 50,000 connections, memory per connection (a count the
#                      open-file limit cannot hold, server or generator, is skipped and said so)
#   resume-storm       10,000 subscribers drop at once and resume
#   catch-up           a late joiner to 200 answers of 2,000 tokens
#
# Writes every result as JSON to bench/results/<UTC date>/ (the file names start with the
# scenario) and prints the tables (bench/table.py). Every result carries the CPU the server, the
# load generator and other work took during its measured window.
#
# Settings (environment):
#   BENCH_SCRATCH    scratch directory for data                  [~/.cache/mooring-bench]
#   BENCH_OUT        results directory                           [bench/results/<UTC date>]
#   BENCH_SECS       measured seconds per point                  [10]
#   BENCH_RUNS       runs of the token-streaming points          [1000]
#   BENCH_STEPS      runs of the --find-max steps                [100,250,500,1000,1500,2000,3000]
#   BENCH_FANOUT     fan-out subscribers                         [10000]
#   BENCH_FANOUT_RATE  fan-out events a second                   [100]
#   BENCH_SOCKUDO    0: fan-out against Mooring only             [1]
#   BENCH_IDLE       idle connection counts                      [10000 19000 50000]
#   BENCH_STORM      resume-storm subscribers                    [10000]
#   BENCH_SCENARIOS  which to run                                [ws-limit token-streaming find-max fan-out idle-connections resume-storm catch-up]
#   BENCH_NICE       niceness for server and load generator (negative needs root)  [unset]
#   BENCH_NO_BUILD   1: use the release binaries already in the target directory   [unset]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

secs="${BENCH_SECS:-10}"
runs="${BENCH_RUNS:-1000}"
steps="${BENCH_STEPS:-100,250,500,1000,1500,2000,3000}"
fanout="${BENCH_FANOUT:-10000}"
fanout_rate="${BENCH_FANOUT_RATE:-100}"
idle_counts="${BENCH_IDLE:-10000 19000 50000}"
storm="${BENCH_STORM:-10000}"
scenarios="${BENCH_SCENARIOS:-ws-limit token-streaming find-max fan-out idle-connections resume-storm catch-up}"
sockudo_version=5.2.0

make_dirs
scratch_outside_repository
runs_dir="$(mktemp -d "$scratch/realtime.XXXXXX")"
trap 'stop_server; rm -rf "$runs_dir"' EXIT

raise_open_files
echo "open-file limit: $(ulimit -n)"

if [ "${BENCH_NO_BUILD:-}" != 1 ]; then build_release; fi

{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor)' || true
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel: $(uname -r)"
  echo "open files: $(ulimit -n); ephemeral ports: $(cat /proc/sys/net/ipv4/ip_local_port_range)"
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine-realtime.txt"
say "machine"; cat "$out/machine-realtime.txt"

start_mooring() { # name rollup_ms
  port="$(free_port)"
  data="$runs_dir/$1"
  mkdir -p "$data"
  sync
  "${nice_prefix[@]}" "$mooring" serve --listen "127.0.0.1:$port" --data-dir "$data" --engine embedded \
    --rollup-window-ms "$2" >"$runs_dir/$1.log" 2>&1 &
  server_pid=$!
  if wait_for_port "$port" "$server_pid"; then return 0; fi
  warn "mooring did not start; its log:"; tail -20 "$runs_dir/$1.log" >&2
  return 1
}

stop_mooring() {
  stop_server
  rm -rf "$data"
}

# Installs Sockudo into the scratch directory unless it is there; fails (and says why) when it
# cannot be. Its build script needs protoc (Debian: protobuf-compiler).
install_sockudo() {
  sockudo="$scratch/sockudo/bin/sockudo"
  if [ -x "$sockudo" ] && [ -f "$scratch/sockudo/.version-$sockudo_version" ]; then return 0; fi
  if ! command -v protoc >/dev/null; then
    warn "installing sockudo needs protoc (apt-get install protobuf-compiler)"
    return 1
  fi
  say "installing sockudo $sockudo_version into $scratch/sockudo (takes a while)"
  if ! cargo install --locked --version "$sockudo_version" sockudo --root "$scratch/sockudo" \
         >"$scratch/sockudo-install.log" 2>&1; then
    warn "could not install sockudo $sockudo_version (log: $scratch/sockudo-install.log)"
    tail -5 "$scratch/sockudo-install.log" >&2 || true
    return 1
  fi
  touch "$scratch/sockudo/.version-$sockudo_version"
}

# Starts Sockudo on a free port with a fresh config: one app (no connection or event limits),
# everything in memory in this one process (local adapter, memory cache, no queue), and the
# per-IP rate limiter and metrics endpoint off: the load generator connects thousands of
# sockets from a few addresses, and 9601 may be taken.
start_sockudo() {
  port="$(free_port)"
  sockudo_key="bench-key"
  sockudo_secret="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  cat >"$runs_dir/sockudo.json" <<JSON
{
  "host": "127.0.0.1",
  "port": $port,
  "debug": false,
  "adapter": { "driver": "local" },
  "cache": { "driver": "memory" },
  "queue": { "driver": "none" },
  "rate_limiter": { "enabled": false },
  "metrics": { "enabled": false },
  "app_manager": {
    "driver": "memory",
    "array": { "apps": [ {
      "id": "bench", "key": "$sockudo_key", "secret": "$sockudo_secret", "enabled": true,
      "max_connections": 0, "enable_client_messages": false, "max_client_events_per_second": 0
    } ] }
  }
}
JSON
  "${nice_prefix[@]}" "$sockudo" --config "$runs_dir/sockudo.json" >"$runs_dir/sockudo.log" 2>&1 &
  server_pid=$!
  if wait_for_port "$port" "$server_pid"; then return 0; fi
  warn "sockudo did not start; its log:"; tail -20 "$runs_dir/sockudo.log" >&2
  stop_server
  return 1
}

run_bench() { # args...: the scenario, against the running server
  "${nice_prefix[@]}" "$bench" "$@" --url "http://127.0.0.1:$port" --server-pid "$server_pid" --no-progress \
    || warn "mooring-bench $1 failed"
}

for scenario in $scenarios; do
  case "$scenario" in
    ws-limit)
      # Both ends of every socket live in this one process: two descriptors per reader.
      readers="$fanout"
      if [ "$((2 * readers + 1000))" -gt "$(ulimit -n)" ]; then
        readers="$((($(ulimit -n) - 1000) / 2))"
        warn "ws-limit: $readers readers, not $fanout: each needs two descriptors within the open-file limit of $(ulimit -n)"
      fi
      say "ws-limit: $readers local readers"
      "${nice_prefix[@]}" "$bench" ws-limit --readers "$readers" --batch 16 --duration-secs "$secs" --no-progress \
        --json "$out/ws-limit-r$readers.json" || warn "ws-limit failed"
      ;;
    token-streaming)
      for rollup in 0 40; do
        say "token-streaming: $runs runs x 5 subscribers, rollup $rollup ms"
        start_mooring "tokens-r$rollup" "$rollup"
        run_bench token-streaming --runs "$runs" --subscribers 5 --duration-secs "$secs" \
          --label "mooring-rollup$rollup" --json "$out/token-streaming-rollup$rollup-n$runs.json"
        stop_mooring
      done
      ;;
    find-max)
      say "token-streaming --find-max: rollup 0, steps $steps"
      start_mooring "tokens-max" 0
      run_bench token-streaming --find-max --steps "$steps" --subscribers 5 --duration-secs "$secs" \
        --label "mooring-rollup0" --json "$out/token-streaming-max-rollup0.json"
      stop_mooring
      ;;
    fan-out)
      say "fan-out: one publisher at $fanout_rate/s to $fanout subscribers"
      start_mooring "fanout" 40
      run_bench fan-out --subscribers "$fanout" --rate "$fanout_rate" --duration-secs "$secs" \
        --json "$out/fan-out-s$fanout-r$fanout_rate.json"
      stop_mooring
      if [ "${BENCH_SOCKUDO:-1}" != 0 ]; then
        say "fan-out: the same point against sockudo $sockudo_version"
        if ! install_sockudo; then
          warn "skipping sockudo"
        elif start_sockudo; then
          run_bench fan-out-pusher --subscribers "$fanout" --rate "$fanout_rate" --duration-secs "$secs" \
            --app-id bench --key "$sockudo_key" --secret "$sockudo_secret" --server sockudo \
            --label sockudo --json "$out/fan-out-sockudo-s$fanout-r$fanout_rate.json"
          stop_server
        fi
      fi
      ;;
    idle-connections)
      for c in $idle_counts; do
        say "idle-connections: $c"
        if [ "$((c + 1000))" -gt "$(ulimit -n)" ]; then
          warn "skipped: $c connections need more than the open-file limit of $(ulimit -n) in each process (raising it needs CAP_SYS_RESOURCE)"
          continue
        fi
        start_mooring "idle-$c" 40
        run_bench idle-connections --connections "$c" --sessions 100 --json "$out/idle-connections-c$c.json"
        stop_mooring
      done
      ;;
    resume-storm)
      say "resume-storm: $storm subscribers"
      start_mooring "storm" 40
      run_bench resume-storm --subscribers "$storm" --sessions 100 --rate 500 --json "$out/resume-storm-s$storm.json"
      stop_mooring
      ;;
    catch-up)
      say "catch-up: 200 answers x 2,000 tokens"
      start_mooring "catchup" 40
      run_bench catch-up --answers 200 --tokens 2000 --repeats 5 --json "$out/catch-up-a200-t2000.json"
      stop_mooring
      ;;
    *) warn "unknown scenario '$scenario'" ;;
  esac
done

say "results in ${out#"$root"/}"
python3 "$root/bench/table.py" --realtime "$out"
