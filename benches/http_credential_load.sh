#!/usr/bin/env bash
# HTTP load bench for decisions under a task credential: `mandate serve`
# (release build, example pack) trusting a throwaway identity provider; an
# agent starts a task, then wrk sends its calls with the task credential.
#
#   benches/http_credential_load.sh [DURATION_SECONDS] [CONNECTIONS...]
#
# Each run starts a fresh task, so every run begins with an empty session
# history (each decision reads the task's history and adds to it). Defaults:
# 10 s per run at 1, 8 and 32 connections. Prints wrk's report and one
# SUMMARY line per run. Needs wrk (Debian `wrk`), openssl and python3 with
# PyJWT and cryptography (`pip install pyjwt cryptography`).
# MANDATE_BIN=path/to/mandate benchmarks that binary instead of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
shift || true
connections=("$@")
[ ${#connections[@]} -gt 0 ] || connections=(1 8 32)

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
python3 -c "import jwt, cryptography" 2>/dev/null ||
  { echo "needs PyJWT and cryptography: pip install pyjwt cryptography" >&2; exit 2; }
bin=${MANDATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p mandate
  bin=target/release/mandate
fi

work=$(mktemp -d)
port=${BENCH_PORT:-18481}
resource="http://127.0.0.1:$port"

# A throwaway identity provider: an Ed25519 key, its JWKS, and a token for
# the agent that starts the tasks.
python3 - "$work" "$resource" <<'PY'
import base64, json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
work, resource = sys.argv[1], sys.argv[2]
key = Ed25519PrivateKey.generate()
raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "bench", "alg": "EdDSA", "use": "sig"}]},
          open(f"{work}/jwks.json", "w"))
now = int(time.time())
token = jwt.encode({"iss": "https://idp.bench", "sub": "spiffe://example.org/agent/planner",
                    "aud": resource, "iat": now, "exp": now + 3600}, key, algorithm="EdDSA",
                   headers={"kid": "bench"})
open(f"{work}/agent.jwt", "w").write(token)
PY
cat > "$work/mandate.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"

[[issuers]]
issuer = "https://idp.bench"
jwks_file = "$work/jwks.json"
TOML

RUST_LOG=warn "$bin" serve --config "$work/mandate.toml" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "$resource/v1/health" >/dev/null && break
  sleep 0.1
done

# BENCH_GROUNDS=N (default 0) gives each task a prompt naming N addresses
# (up to 512, the most a task keeps), and the calls declare `to` an e-mail
# destination (`mandate/arguments`), so every decision reads the task's
# grounds and computes `context.provenance`: what provenance costs.
grounds=${BENCH_GROUNDS:-0}
export BENCH_DECLARE=$(( grounds > 0 ? 1 : 0 ))
start_task() {
  python3 - "$grounds" <<'PY' |
import json, sys
n = int(sys.argv[1])
task = {"intent": "answer customer questions", "tools": ["mail/read_inbox", "mail/send_email"],
        "params": {"allowed_recipients": ["carol@example.com"]}, "ttl_seconds": 3600}
if n:
    task["prompt"] = "Write to " + " ".join(f"user{i}@example.org" for i in range(n))
print(json.dumps(task))
PY
  curl -fs "$resource/v1/tasks" -H "authorization: Bearer $(cat "$work/agent.jwt")" \
    -H 'content-type: application/json' -d @- |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["credential"])'
}

# Warm up, then measure, each run on a task of its own.
MANDATE_CREDENTIAL=$(start_task) wrk -t1 -c4 -d2s -s benches/http/decide_credential.lua "$resource/v1/decide" >/dev/null
echo "# $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $bin (checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for c in "${connections[@]}"; do
  threads=$(( c < 2 ? 1 : 2 ))
  echo "## under a task credential: connections=$c threads=$threads duration=${duration}s"
  MANDATE_CREDENTIAL=$(start_task) wrk -t"$threads" -c"$c" -d"${duration}s" --latency \
    -s benches/http/decide_credential.lua "$resource/v1/decide"
done
