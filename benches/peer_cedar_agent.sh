#!/usr/bin/env bash
# HTTP load bench of a peer: cedar-agent (github.com/permitio/cedar-agent), a
# plain Cedar HTTP policy server without receipts, under wrk, for comparison
# with benches/http_load.sh.
#
#   benches/peer_cedar_agent.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Defaults: 10 s per run, at 1, 8 and 32 connections. Prints wrk's own report,
# one SUMMARY line per run in the format of benches/http_load.sh (throughput,
# p50/p90/p99 latency in µs), and one DECISIONS line counting answers other
# than the expected ones. The requests alternate an allow and a deny
# (benches/peer/is_authorized.lua) against the example pack's policies
# written for a plain Cedar server (benches/peer/policies.json: its approval
# permits become forbids) and the two tools as stored entities
# (benches/peer/entities.json). Needs wrk (Debian package `wrk`) and curl.
# Traffic goes to 127.0.0.1 only; BENCH_PORT (default 18482) is its port.
#
# cedar-agent is not part of this repository. Build it once, outside it:
#
#   git clone https://github.com/permitio/cedar-agent /tmp/cedar-agent
#   git -C /tmp/cedar-agent checkout aec5db916b0a791588a114198198734cecbabbea
#   (cd /tmp/cedar-agent && cargo build --release --locked)
#
# then CEDAR_AGENT_BIN=/tmp/cedar-agent/target/release/cedar-agent (without
# it, `cedar-agent` on PATH is used).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 2; }
bin=${CEDAR_AGENT_BIN:-$(command -v cedar-agent || true)}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "cedar-agent not found: build it as the header of $0 says, then" >&2
  echo "  CEDAR_AGENT_BIN=/tmp/cedar-agent/target/release/cedar-agent $0" >&2
  exit 2
fi

port=${BENCH_PORT:-18482}
url="http://127.0.0.1:$port"
if curl -s -o /dev/null "$url/"; then
  echo "something already listens on 127.0.0.1:$port: set BENCH_PORT" >&2
  exit 2
fi

# cedar-agent reads its settings from flags and from PORT, DATA, ... and
# CEDAR_AGENT_PORT, CEDAR_AGENT_DATA, ... in the environment, the environment
# winning; so all of them are set or unset here. It runs in a temporary
# directory (Rocket reads a Rocket.toml in its working directory), logging
# warnings only, like `mandate serve` under RUST_LOG=warn in http_load.sh (at
# its default, info, it logs several lines per request, at great cost).
tmp=$(mktemp -d)
peer=$PWD/benches/peer
(
  cd "$tmp"
  exec env -u PORT -u ADDR -u DATA -u POLICIES -u SCHEMA -u AUTHENTICATION -u LOG_LEVEL \
    -u CEDAR_AGENT_SCHEMA -u CEDAR_AGENT_AUTHENTICATION \
    CEDAR_AGENT_ADDR=127.0.0.1 CEDAR_AGENT_PORT="$port" CEDAR_AGENT_LOG_LEVEL=warn \
    CEDAR_AGENT_POLICIES="$peer/policies.json" CEDAR_AGENT_DATA="$peer/entities.json" \
    "$bin" --addr 127.0.0.1 --port "$port" --log-level warn \
    --policies "$peer/policies.json" --data "$peer/entities.json"
) >"$tmp/cedar-agent.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  curl -fs "$url/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if ! curl -fs "$url/health" >/dev/null; then
  echo "cedar-agent did not start; its log:" >&2
  cat "$tmp/cedar-agent.log" >&2
  exit 1
fi

# Warm up, checking that the policies and entities loaded and that every
# answer is the expected one; then measure.
warmup=$(wrk -t1 -c4 -d2s -s benches/peer/is_authorized.lua "$url/v1/is_authorized" 2>&1)
if ! grep -q '^DECISIONS allow=[1-9][0-9]* deny=[1-9][0-9]* unexpected=0$' <<<"$warmup"; then
  echo "unexpected answers from cedar-agent during warm-up:" >&2
  echo "$warmup" >&2
  cat "$tmp/cedar-agent.log" >&2
  exit 1
fi
commit='?'
src=$(dirname "$bin")/../..
if [ -f "$src/Cargo.toml" ]; then
  commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')
fi
echo "# $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ), $bin (cedar-agent $commit; checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for c in "${connections[@]}"; do
  threads=$(( c < 2 ? 1 : 2 ))
  echo "## connections=$c threads=$threads duration=${duration}s"
  wrk -t"$threads" -c"$c" -d"${duration}s" --latency -s benches/peer/is_authorized.lua "$url/v1/is_authorized"
done
