#!/usr/bin/env bash
# HTTP load bench: `mandate serve` (release build, example pack) under wrk.
#
#   benches/http_load.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Defaults: 10 s per run, at 1, 8 and 32 connections. Prints wrk's own report
# and one SUMMARY line per run (throughput, p50/p90/p99 latency in µs).
# Needs wrk (Debian package `wrk`). Traffic goes to 127.0.0.1 only.
# MANDATE_BIN=path/to/mandate benchmarks that binary instead of building this
# checkout (to compare two builds under the same conditions).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
bin=${MANDATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p mandate
  bin=target/release/mandate
fi

data=$(mktemp -d)
port=${BENCH_PORT:-18480}
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/v1/health" >/dev/null && break
  sleep 0.1
done

# Warm up, then measure.
wrk -t1 -c4 -d2s -s benches/http/decide.lua "http://127.0.0.1:$port/v1/decide" >/dev/null
echo "# $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $bin (checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for c in "${connections[@]}"; do
  threads=$(( c < 2 ? 1 : 2 ))
  echo "## connections=$c threads=$threads duration=${duration}s"
  wrk -t"$threads" -c"$c" -d"${duration}s" --latency -s benches/http/decide.lua "http://127.0.0.1:$port/v1/decide"
done
