#!/usr/bin/env bash
# HTTP load bench across stores: one `mandate serve` on SQLite, then one, two
# and three on one PostgreSQL database, under wrk, side by side in one run.
#
#   benches/http_cluster_load.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Defaults: 10 s per run, at 1, 8 and 32 connections. With N instances the
# connections are dealt round-robin: one wrk per instance with its share of
# the connections, all at once; the line per run adds their throughputs and
# reports the highest of their latency percentiles. The PostgreSQL server is
# started here (Debian's binaries, a temporary directory, the `postgres`
# user when run as root) with its durable defaults (fsync and synchronous
# commit on), like SQLite's `synchronous = FULL`. Needs wrk and postgresql.
# MANDATE_BIN=path/to/mandate benchmarks that binary instead of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL not found: apt-get install postgresql" >&2; exit 2; }
bin=${MANDATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p mandate
  bin=target/release/mandate
fi
bin=$(realpath "$bin")

work=$(mktemp -d)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(setpriv --reuid postgres --regid postgres --init-groups); chown postgres "$work"; fi
pgport=${BENCH_PG_PORT:-18490}
servers=()
cleanup() {
  for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U mandate --auth=trust >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $pgport -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null

# Starts `count` instances on `store` from port 18481; waits until they answer.
start() {
  local store=$1 count=$2 n
  servers=()
  for n in $(seq 0 $((count - 1))); do
    mkdir -p "$work/data-$n"
    if [ "$n" -gt 0 ]; then cp -r "$work/data-0/keys" "$work/data-$n/"; fi
    RUST_LOG=warn MANDATE_STORE=$store "$bin" serve --listen "127.0.0.1:$((18481 + n))" \
      --data-dir "$work/data-$n" &
    servers+=($!)
    for _ in $(seq 200); do
      curl -fs "http://127.0.0.1:$((18481 + n))/v1/health" >/dev/null && break
      sleep 0.1
    done
  done
}

stop() {
  for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done
  wait "${servers[@]}" 2>/dev/null || true
  servers=()
  rm -rf "$work"/data-*
}

# One run: `c` connections dealt over `count` instances.
run() {
  local label=$1 count=$2 c=$3 n share pids=() outs=()
  for n in $(seq 0 $((count - 1))); do
    share=$(( c / count + (n < c % count ? 1 : 0) ))
    [ "$share" -gt 0 ] || continue
    wrk -t1 -c"$share" -d"${duration}s" --latency -s benches/http/decide.lua \
      "http://127.0.0.1:$((18481 + n))/v1/decide" >"$work/wrk-$n" &
    pids+=($!)
    outs+=("$work/wrk-$n")
  done
  wait "${pids[@]}"
  grep -h '^SUMMARY' "${outs[@]}" | awk -v label="$label" -v c="$c" '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      rps += v["rps"]; if (v["p50_us"] > p50) p50 = v["p50_us"]; if (v["p99_us"] > p99) p99 = v["p99_us"]
      errors += v["non2xx"] + v["socket_errors"] }
    END { printf "RESULT store=%s connections=%d rps=%.0f p50_us=%d p99_us=%d errors=%d\n", label, c, rps, p50, p99, errors }'
}

echo "# $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $bin (checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?')), PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
db=0
for setup in "sqlite 1" "postgres 1" "postgres 2" "postgres 3"; do
  read -r kind count <<<"$setup"
  for c in "${connections[@]}"; do
    if [ "$kind" = sqlite ]; then
      store=sqlite
    else
      db=$((db + 1))
      "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U mandate "bench$db"
      store="postgres://mandate@127.0.0.1:$pgport/bench$db"
    fi
    start "$store" "$count"
    # Warm up, then measure.
    wrk -t1 -c2 -d2s -s benches/http/decide.lua "http://127.0.0.1:18481/v1/decide" >/dev/null
    run "$kind×$count" "$count" "$c"
    stop
  done
done
