# What the bench scripts share; sourced, never run:
#
#   source "$(dirname "$0")/lib.sh"
#
# It moves to the repository root (`root`) and sets `target_dir`, where cargo builds. It leaves
# `set -euo pipefail`, the settings and the trap to each script.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

say() { printf '\n== %s\n' "$*"; }
warn() { printf '!! %s\n' "$*" >&2; }

# Sets `scratch` (BENCH_SCRATCH) and `out` (BENCH_OUT, the results) and creates both.
make_dirs() {
  scratch="${BENCH_SCRATCH:-$HOME/.cache/mooring-bench}"
  out="${BENCH_OUT:-$root/bench/results/$(date -u +%Y-%m-%d)}"
  mkdir -p "$scratch" "$out"
}

# Makes `scratch` absolute and refuses one inside the repository: what goes there is never
# committed.
scratch_outside_repository() {
  scratch="$(cd "$scratch" && pwd)"
  case "$scratch/" in
    "$root"/*) warn "BENCH_SCRATCH must be outside the repository"; exit 2 ;;
  esac
}

# BENCH_NICE as a prefix for the servers and the load generator (empty when unset).
nice_prefix=()
if [ -n "${BENCH_NICE:-}" ]; then nice_prefix=(nice -n "$BENCH_NICE"); fi

# Tens of thousands of sockets on each side: servers inherit this limit, the load generator
# raises its own as far as it may.
raise_open_files() {
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# Builds the server and the load generator (release).
build_release() {
  say "build (release)"
  cargo build --release --locked -p mooring -p mooring-bench
}
mooring="$target_dir/release/mooring"
bench="$target_dir/release/mooring-bench"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to ten seconds for something to listen on `port`; fails sooner if `pid` exits.
wait_for_port() { # port pid
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The server started last, for `stop_server`.
server_pid=""

# Stops the server in `server_pid`, if one runs, and waits for it to exit.
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
}
