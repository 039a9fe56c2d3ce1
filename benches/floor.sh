#!/usr/bin/env bash
# Issue 15's side-by-side run: the decision path against its floors, in one
# run on one machine, one after the other:
#
#   1. one fsync of the data directory's disk (benches/fsync_probe.py): no
#      durable answer can beat it;
#   2. a plain Cedar HTTP server without receipts (cedar-agent,
#      benches/peer_cedar_agent.sh; build it as that script's header says
#      and set CEDAR_AGENT_BIN);
#   3. `mandate serve` with durable receipts (benches/http_load.sh);
#   4. the same under a task credential (benches/http_credential_load.sh).
#
#   benches/floor.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Defaults: 10 s per run at 1, 8 and 32 connections. Prints one labelled
# SUMMARY line per configuration (wrk's full reports are dropped; run the
# scripts alone for those). MANDATE_BIN picks the Mandate binary, as for the
# scripts it runs. Exits 2 if a peer or a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

echo "# $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ), checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 benches/fsync_probe.py "$dir" | sed 's/^/fsync            /'

label() {
  local name=$1
  shift
  "$@" 2>&1 | awk -v name="$name" '
    /^## .*connections=/ { match($0, /connections=[0-9]+/); conns = substr($0, RSTART + 12, RLENGTH - 12) }
    /^SUMMARY/ { printf "%-16s c=%-3s %s\n", name, conns, $0 }'
  # The scripts exit non-zero on a missing tool or peer: say so and stop.
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || { echo "$name: exited $status" >&2; exit "$status"; }
}

label cedar-agent benches/peer_cedar_agent.sh "$duration" "${connections[@]}"
label mandate benches/http_load.sh "$duration" "${connections[@]}"
label mandate-task benches/http_credential_load.sh "$duration" "${connections[@]}"
