#!/usr/bin/env bash
# Durable appends, side by side: Mooring and its peers on this machine, in one run.
#
#   bench/run-peers.sh
#
# Builds Mooring and mooring-bench (release), installs the peers into a scratch directory outside
# the repository (never committed), then for every point (1 / 64 / 256 producers × 1 / 100
# streams, 256-byte appends) starts each server afresh on a free port with an empty data
# directory, runs `mooring-bench durable-appends` against it and stops it. Also measures the
# fdatasync group-commit ceiling of the same disk at matching batch sizes. Writes every result as
# JSON to bench/results/<UTC date>/, prints a table and redraws docs/benchmarks-durable-appends.svg.
#
# Peers:
#   electric  ElectricSQL's Rust server, crates.io `durable-streams` 0.1.5, --durability wal
#   node      the Node reference server, npm `@durable-streams/server` 0.3.7, file-backed
# A peer that cannot be installed or started is reported and skipped; the others still run.
#
# Settings (environment):
#   BENCH_SCRATCH    scratch directory for peers and data   [~/.cache/mooring-bench]
#   BENCH_OUT        results directory                      [bench/results/<UTC date>]
#   BENCH_SECS       measured seconds per point             [8]
#   BENCH_WARMUP     warm-up seconds per point              [2]
#   BENCH_PRODUCERS  producer counts                        [1 64 256]
#   BENCH_STREAMS    stream counts                          [1 100]
#   BENCH_SERVERS    servers to run                         [mooring electric node]
#   BENCH_FSYNC_SECS seconds per fsync-limit measurement    [5]
#   BENCH_ROUNDS     rounds of every point; the tables quote each server's median round   [1]
#   BENCH_CHART      where to draw the chart ("" for none)  [docs/benchmarks-durable-appends.svg]
#   BENCH_NICE       niceness for servers and load generator, e.g. -10 on a machine shared with
#                    other work (negative needs root); the figures still carry the CPU that
#                    other work took                        [unset: inherit]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

secs="${BENCH_SECS:-8}"
warmup="${BENCH_WARMUP:-2}"
producer_counts="${BENCH_PRODUCERS:-1 64 256}"
stream_counts="${BENCH_STREAMS:-1 100}"
servers="${BENCH_SERVERS:-mooring electric node}"
fsync_secs="${BENCH_FSYNC_SECS:-5}"
rounds="${BENCH_ROUNDS:-1}"
chart="${BENCH_CHART-$root/docs/benchmarks-durable-appends.svg}"

electric_version=0.1.5
node_server_version=0.3.7

make_dirs
scratch_outside_repository
runs="$(mktemp -d "$scratch/run.XXXXXX")"
trap 'stop_server; rm -rf "$runs"' EXIT

build_release

# ---- peers -------------------------------------------------------------------------------------
available=""
electric_bin="$scratch/electric/bin/durable-streams-server"
node_dir="$scratch/node"
for server in $servers; do
  case "$server" in
    mooring) available="$available mooring" ;;
    electric)
      say "peer: ElectricSQL's Rust server (durable-streams $electric_version)"
      if [ -x "$electric_bin" ] && [ -f "$scratch/electric/.version-$electric_version" ]; then
        echo "already installed in $scratch/electric"
        available="$available electric"
      elif cargo install --locked --version "$electric_version" durable-streams \
             --root "$scratch/electric" >"$scratch/electric-install.log" 2>&1; then
        touch "$scratch/electric/.version-$electric_version"
        echo "installed into $scratch/electric"
        available="$available electric"
      else
        warn "could not install durable-streams $electric_version (log: $scratch/electric-install.log); skipping ElectricSQL's server"
        tail -5 "$scratch/electric-install.log" >&2 || true
      fi
      ;;
    node)
      say "peer: Node reference server (@durable-streams/server $node_server_version)"
      installed=""
      if [ -f "$node_dir/node_modules/@durable-streams/server/package.json" ]; then
        installed="$(node -p "require('$node_dir/node_modules/@durable-streams/server/package.json').version" 2>/dev/null || true)"
      fi
      if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        warn "node or npm is not installed; skipping the Node reference server"
        continue
      fi
      if [ "$installed" != "$node_server_version" ]; then
        mkdir -p "$node_dir"
        [ -f "$node_dir/package.json" ] || echo '{"private":true,"type":"module"}' >"$node_dir/package.json"
        if ! npm install --prefix "$node_dir" --no-audit --no-fund \
               "@durable-streams/server@$node_server_version" >"$scratch/node-install.log" 2>&1; then
          warn "could not install @durable-streams/server $node_server_version (log: $scratch/node-install.log); skipping the Node server"
          tail -5 "$scratch/node-install.log" >&2 || true
          continue
        fi
      fi
      cat >"$node_dir/launch.mjs" <<'JS'
// The Node reference server, file-backed: node launch.mjs PORT DATA_DIR
import { DurableStreamTestServer } from "@durable-streams/server"
const [port, dataDir] = process.argv.slice(2)
const server = new DurableStreamTestServer({
  port: Number(port), host: "127.0.0.1", dataDir, longPollTimeout: 500,
})
await server.start()
console.log(`node reference server on 127.0.0.1:${port}, file-backed in ${dataDir}`)
const stop = async () => { await server.stop(); process.exit(0) }
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
JS
      echo "installed in $node_dir (node $(node --version))"
      available="$available node"
      ;;
    *) warn "unknown server '$server' in BENCH_SERVERS; skipping" ;;
  esac
done

# ---- the machine -------------------------------------------------------------------------------
# Share of CPU time not idle over two seconds: anything else running skews every figure.
cpu_busy() {
  python3 - <<'PY'
import time
def sample():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]
t0, i0 = sample(); time.sleep(2); t1, i1 = sample()
print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))
PY
}
busy="$(cpu_busy)"
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor|CPU\(s\)|Thread\(s\) per core)' || true
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel: $(uname -r)"
  echo "scratch filesystem:"; df -hT "$scratch" | tail -1
  echo "rustc: $(rustc --version)"
  command -v node >/dev/null && echo "node: $(node --version)"
  echo "points: producers [$producer_counts] x streams [$stream_counts], ${secs}s + ${warmup}s warm-up, 256-byte appends"
  echo "cpu busy just before the run (2 s sample, all cores): ${busy}%"
  echo "niceness of servers and load generator: ${BENCH_NICE:-inherited}"
} >"$out/machine.txt"
say "machine"; cat "$out/machine.txt"
if [ "$busy" -gt 15 ]; then
  warn "the CPUs were ${busy}% busy before the run: other work on this machine will skew the figures"
fi

# ---- servers -----------------------------------------------------------------------------------
start_server() { # name port data log
  case "$1" in
    mooring) "${nice_prefix[@]}" "$mooring" serve --listen "127.0.0.1:$2" --data-dir "$3" --engine embedded >"$4" 2>&1 & ;;
    electric) "${nice_prefix[@]}" "$electric_bin" --host 127.0.0.1 --port "$2" --data-dir "$3" --durability wal >"$4" 2>&1 & ;;
    node) (cd "$node_dir" && exec "${nice_prefix[@]}" node launch.mjs "$2" "$3") >"$4" 2>&1 & ;;
  esac
  server_pid=$!
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ticks_per_sec="$(getconf CLK_TCK)"

# Adds CPU use (100 = one core) and the server's peak memory to a result file: the server's, the
# load generator's, the whole machine's, and what is left, which is other work skewing the point.
annotate() { # json start_secs end_secs server_ticks machine_ticks generator_cpu_secs rss_kib
  python3 - "$@" "$ticks_per_sec" <<'PY'
import json, sys
path = sys.argv[1]
start, end = float(sys.argv[2]), float(sys.argv[3])
server_ticks, machine_ticks = int(sys.argv[4]), int(sys.argv[5])
generator_secs, rss, hz = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
wall = max(end - start, 1e-6)
with open(path) as f:
    r = json.load(f)
# Over the whole client run: stream creation, warm-up and measurement.
r["server_cpu_percent"] = round(100.0 * server_ticks / hz / wall, 1)
r["generator_cpu_percent"] = round(100.0 * generator_secs / wall, 1)
r["machine_cpu_percent"] = round(100.0 * machine_ticks / hz / wall, 1)
r["other_cpu_percent"] = round(max(0.0, r["machine_cpu_percent"] - r["server_cpu_percent"] - r["generator_cpu_percent"]), 1)
r["server_peak_rss_kib"] = rss
with open(path, "w") as f:
    json.dump(r, f, indent=2)
    f.write("\n")
PY
}

failed=""
# Rounds outermost, so a machine that drifts during the run weighs on every server alike.
for round in $(seq 1 "$rounds"); do
  suffix=""
  if [ "$round" -gt 1 ]; then suffix="-r$round"; fi
  for streams in $stream_counts; do
    for producers in $producer_counts; do
      for server in $available; do
        case " $failed " in *" $server "*) continue ;; esac
        say "$server: $producers producers, $streams streams (round $round of $rounds)"
        port="$(free_port)"
        data="$runs/$server-p$producers-s$streams"
        log="$runs/$server-p$producers-s$streams.log"
        mkdir -p "$data"
        sync
        start_server "$server" "$port" "$data" "$log"
        if ! wait_for_port "$port" "$server_pid"; then
          warn "$server did not start on port $port; skipping it from here on. Its log:"
          tail -20 "$log" >&2 || true
          stop_server
          failed="$failed $server"
          continue
        fi
        json="$out/durable-appends-$server-p$producers-s$streams$suffix.json"
        t0="$(cpu_ticks "$server_pid")"; m0="$(machine_ticks)"; s0="$(date +%s.%N)"
        TIMEFORMAT='%U %S'
        if { time "${nice_prefix[@]}" "$bench" durable-appends --url "http://127.0.0.1:$port" --label "$server" \
               --producers "$producers" --streams "$streams" --size 256 \
               --duration-secs "$secs" --warmup-secs "$warmup" --json "$json" 2>&3 ; } 3>&2 2>"$runs/time"; then
          t1="$(cpu_ticks "$server_pid")"; m1="$(machine_ticks)"; s1="$(date +%s.%N)"
          generator_secs="$(awk '{print $1 + $2}' "$runs/time")"
          annotate "$json" "$s0" "$s1" "$((t1 - t0))" "$((m1 - m0))" "$generator_secs" "$(rss_kib "$server_pid")"
        else
          warn "the run against $server failed (server log: last lines below)"
          tail -10 "$log" >&2 || true
        fi
        stop_server
        rm -rf "$data"
      done
    done
  done
done

say "fsync limit of this disk (the scratch directory's file system)"
batches="$(for p in $producer_counts; do echo "$p"; done | sort -n | uniq)"
for batch in $batches; do
  sync
  "${nice_prefix[@]}" "$bench" fsync-limit --dir "$runs" --batch "$batch" --size 256 --duration-secs "$fsync_secs" \
    --file-mode prewritten --json "$out/fsync-limit-b$batch-prewritten.json"
done
sync
"${nice_prefix[@]}" "$bench" fsync-limit --dir "$runs" --batch 1 --size 256 --duration-secs "$fsync_secs" \
  --file-mode growing --json "$out/fsync-limit-b1-growing.json"

say "results in ${out#"$root"/}"
python3 "$root/bench/table.py" "$out"
if [ -n "$chart" ]; then
  python3 "$root/bench/chart.py" "$out" --out "$chart"
  echo "chart: ${chart#"$root"/}"
fi
