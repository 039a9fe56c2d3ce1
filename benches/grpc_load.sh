#!/usr/bin/env bash
# gRPC load bench: `mandate serve --grpc-listen` (release build, example pack)
# under a closed-loop tonic client, beside the same server's HTTP API under
# wrk, for comparison.
#
#   benches/grpc_load.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Defaults: 10 s per run, at 1, 8 and 32 connections. One server serves both
# front ends; at each connection count the gRPC run goes first, then the
# HTTP run (benches/http_load.sh's load: wrk with benches/http/decide.lua).
# The gRPC client is the bench target `grpc_load` of mandate-grpc
# (crates/mandate-grpc/benches/grpc_load.rs): each connection a channel of
# its own, one call at a time, the same three requests as decide.lua (an
# allow, a deny, an approval required) as protobuf messages, every answer
# checked. Each run prints its own report and one SUMMARY line (throughput,
# p50/p90/p99 latency in µs, errors), then one CPU line: the CPU time the
# server and the load generator used during the run, in all and per request
# (the two share this machine's cores). A labelled table of both closes the
# run, as benches/floor.sh prints it.
#
# Needs wrk (Debian package `wrk`), curl and python3 (to find free ports).
# Traffic goes to 127.0.0.1 only; BENCH_PORT and BENCH_GRPC_PORT pick the
# ports (default: free ones). MANDATE_BIN=path/to/mandate benchmarks that
# binary instead of building this checkout. Exits 1 if any call failed or
# was answered otherwise than expected.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 2; }
bin=${MANDATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p mandate
  bin=target/release/mandate
fi
# The load generator, built with the bench profile (release).
gen=$(cargo bench --quiet -p mandate-grpc --bench grpc_load --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*grpc_load[^"]*\)".*/\1/p' | tail -1)
[ -x "$gen" ] || { echo "the grpc_load bench did not build" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=${BENCH_PORT:-$(free_port)}
grpc_port=${BENCH_GRPC_PORT:-$(free_port)}
[ "$grpc_port" != "$port" ] || grpc_port=$(free_port)

work=$(mktemp -d)
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$grpc_port" \
  --data-dir "$work/data" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/v1/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "mandate serve did not start" >&2; exit 1; }
  sleep 0.1
done
# Both listeners are bound before the server answers its health check.

# The server's CPU time so far, in clock ticks.
ticks_per_second=$(getconf CLK_TCK)
server_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }

status=0
# run LABEL CONNECTIONS COMMAND...: runs the load, prints its output, a CPU
# line, and keeps the SUMMARY line (labelled) for the closing table.
run() {
  local label=$1 conns=$2 before after
  shift 2
  before=$(server_ticks)
  { TIMEFORMAT='%3U %3S'; time "$@" >"$work/out"; } 2>"$work/time" || status=1
  after=$(server_ticks)
  # `time` writes its line last; anything before it is the command's stderr.
  sed '$d' "$work/time" >&2
  cat "$work/out"
  awk -v ticks=$((after - before)) -v hz="$ticks_per_second" -v client="$(tail -1 "$work/time")" '
    /^SUMMARY/ { match($0, /requests=[0-9]+/); requests = substr($0, RSTART + 9, RLENGTH - 9) }
    END {
      split(client, c, " "); server_ms = ticks * 1000 / hz; client_ms = (c[1] + c[2]) * 1000
      printf "CPU server_ms=%d client_ms=%d server_us_per_request=%.1f client_us_per_request=%.1f\n",
        server_ms, client_ms, requests ? server_ms * 1000 / requests : 0, requests ? client_ms * 1000 / requests : 0
    }' "$work/out" | tee -a "$work/cpu-$label-$conns"
  grep '^SUMMARY' "$work/out" | sed "s/^/$(printf '%-5s c=%-3s ' "$label" "$conns")/" >>"$work/table" || true
}

grpc() { "$gen" --addr "127.0.0.1:$grpc_port" "$@"; }
http() {
  wrk "$@" --latency -s benches/http/decide.lua "http://127.0.0.1:$port/v1/decide"
}

# Warm up both front ends, checking the gRPC answers, then measure.
grpc --seconds 2 --connections 4 >/dev/null || { echo "the gRPC warm-up failed" >&2; exit 1; }
wrk -t1 -c4 -d2s -s benches/http/decide.lua "http://127.0.0.1:$port/v1/decide" >/dev/null
echo "# $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ), $bin (checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for c in "${connections[@]}"; do
  threads=$(( c < 2 ? 1 : 2 ))
  echo "## grpc connections=$c threads=$threads duration=${duration}s"
  run grpc "$c" grpc --seconds "$duration" --connections "$c" --threads "$threads"
  echo "## http connections=$c threads=$threads duration=${duration}s"
  run http "$c" http -t"$threads" -c"$c" -d"${duration}s"
done

echo "# gRPC against HTTP, same server"
while read -r label c rest; do
  echo "$label $c $rest $(cat "$work/cpu-$label-${c#c=}")"
done <"$work/table"
exit "$status"
