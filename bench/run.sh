#!/usr/bin/env bash
# latchkey's performance figures, one command:   bash bench/run.sh
#
# Builds the release binary; starts a private redis-server and three issuers on loopback (Redis,
# embedded with durability = fsync, embedded with durability = process) at the shipped token and
# argon2 settings; drives every scenario with wrk; runs `openssl speed` and the criterion benches
# in the same run; writes BENCHMARKS.md and bench/refresh-vs-connections.svg.
# Knobs: DURATION (wrk seconds per run, 10), ROUNDS (runs of each target's scenario, 3; the
# report takes their median), SKIP_CRITERION=1 (keeps openssl speed only).
# Takes about 15 minutes on 2 cores. Everything started here is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS=(8 32 128 512)
USER_NAME="bench"
PASSWORD="bench passphrase for load tests"

for tool in wrk redis-server redis-cli openssl python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
echo "bench: building the release binary" >&2
cargo build --release --quiet --bin latchkey
BIN="$ROOT/target/release/latchkey"

TMP="$(mktemp -d /tmp/latchkey-bench.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$TMP/results.jsonl"
FACTS="$TMP/facts.jsonl"
: >"$RESULTS"
: >"$FACTS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fact() { python3 -c 'import json,sys; print(json.dumps({sys.argv[1]: json.loads(sys.argv[2])}))' "$1" "$2" >>"$FACTS"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_redis NAME VAR: sets VAR to its port (not a command substitution: the pid must be
# recorded in this shell for cleanup).
start_redis() {
  local port; port="$(free_port)"
  mkdir -p "$TMP/$1"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/$1" \
    >"$TMP/$1/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
  printf -v "$2" '%s' "$port"
}

# start_issuer NAME STORE_URL DURABILITY MEMORY_KIB [ALG]: one issuer, its own key (ES256 unless
# ALG says), the bench user and a confidential client. Sets PORT_<NAME> and PID_<NAME>.
SECRET="$(openssl rand -hex 32)"
start_issuer() {
  local name="$1" store="$2" durability="$3" memory="$4" alg="${5:-ES256}" port dir hash
  port="$(free_port)"; dir="$TMP/$name"
  mkdir -p "$dir/keys" "$dir/data"
  "$BIN" keys generate --alg "$alg" --kid bench --dir "$dir/keys" >/dev/null
  hash="$(printf '%s\n' "$SECRET" | "$BIN" hash-secret -c "$dir/none.toml")"
  cat >"$dir/latchkey.toml" <<CONFIG
issuer = "http://127.0.0.1:$port"
listen = "127.0.0.1:$port"
[tokens]
access_ttl = "15m"
refresh_ttl = "30d"
refresh_idle_ttl = "7d"
reuse_grace = "10s"
audience = ["api"]
[store]
url = "$store"
durability = "$durability"
[passwords]
memory_kib = $memory
iterations = 2
parallelism = 1
[limits]
login_attempts_per_ip = 100000000
# wrk is one address: the code mint opens a page per request.
sign_in_pages_per_ip = 100000000
[dpop]
# wrk is one address: the whole replay memory may be its (see docs/dpop.md).
max_remembered_proofs = 1000000
[[keys]]
kid = "bench"
alg = "$alg"
path = "keys/bench.pem"
not_before = "2020-01-01T00:00:00Z"
not_after = "2100-01-01T00:00:00Z"
[sso]
# Codes are minted before the exchange run starts: they must outlive the minting.
code_ttl = "10m"
[[clients]]
id = "bench-service"
type = "confidential"
secret_hash = "$hash"
grants = ["client_credentials"]
[[clients]]
id = "bench-web"
type = "public"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["http://127.0.0.1:9/callback"]
CONFIG
  printf '%s\n' "$PASSWORD" | "$BIN" users add "$USER_NAME" -c "$dir/latchkey.toml" >/dev/null
  LATCHKEY_LOG=warn "$BIN" serve -c "$dir/latchkey.toml" >"$dir/serve.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" || { cat "$dir/serve.log" >&2; exit 1; }
  printf -v "PORT_${name//-/_}" '%s' "$port"
  printf -v "PID_${name//-/_}" '%s' "$pid"
}

# wrk_run SCENARIO SERVER CONNECTIONS SECONDS SCRIPT URL [wrk args...]: one recorded run.
wrk_run() {
  local scenario="$1" server="$2" conns="$3" seconds="$4" script="$5" url="$6" out line
  shift 6
  out="$TMP/wrk-$scenario-$server-$conns.txt"
  timeout $((seconds + 60)) wrk -t2 -c"$conns" -d"${seconds}s" --timeout 5s \
    -s "bench/wrk/$script" "$url" "$@" >"$out" 2>&1 || true
  line="$(grep '^RESULT ' "$out" | tail -1 | cut -d' ' -f2- || true)"
  if [ -z "$line" ]; then echo "bench: no result for $scenario on $server" >&2; cat "$out" >&2; return 1; fi
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(scenario=sys.argv[2], server=sys.argv[3], connections=int(sys.argv[4])); print(json.dumps(r))' \
    "$line" "$scenario" "$server" "$conns" >>"$RESULTS"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("bench: %-18s %-17s c=%-3s %8.0f ok/s  p99 %6.1f ms  errors %d" % (sys.argv[2], sys.argv[3], sys.argv[4], r["ok_rps"], r["p99_us"]/1000, r["non2xx"]+r["socket_errors"]+r["starved"]))' \
    "$line" "$scenario" "$server" "$conns" >&2
}

# refresh_run SERVER CONNECTIONS [SCENARIO]: fresh login sessions, then a refresh chain per connection.
refresh_run() {
  local server="$1" conns="$2" scenario="${3:-refresh}" port_var="PORT_${1//-/_}" tokens
  tokens="$TMP/tokens-$server-$conns-$scenario.txt"
  # A spare token per thread beyond the connections (see bench/wrk/refresh.lua).
  python3 bench/prime.py "http://127.0.0.1:${!port_var}" "$USER_NAME" "$PASSWORD" $((conns + 4)) "$tokens" 4 \
    || echo "bench: some logins failed; short chains show as starved" >&2
  wrk_run "$scenario" "$server" "$conns" "$DURATION" refresh.lua "http://127.0.0.1:${!port_var}" -- "$tokens" 2
}

start_redis redis REDIS_PORT
start_issuer redis "redis://127.0.0.1:$REDIS_PORT/0" fsync 19456
start_issuer embedded-fsync "sqlite://data/latchkey.db" fsync 19456
start_issuer embedded-process "sqlite://data/latchkey.db" process 19456
echo "bench: issuers up (redis :$PORT_redis, embedded-fsync :$PORT_embedded_fsync, embedded-process :$PORT_embedded_process)" >&2

# Warm-up, not recorded.
for port in "$PORT_redis" "$PORT_embedded_fsync" "$PORT_embedded_process"; do
  wrk -t2 -c32 -d2s "http://127.0.0.1:$port/.well-known/jwks.json" >/dev/null 2>&1
done

# Refresh against connection count, on each store.
for conns in "${CONNECTIONS[@]}"; do
  for server in redis embedded-fsync embedded-process; do refresh_run "$server" "$conns"; done
done
# The targets are at 32 connections: more rounds there, so each figure is a median.
for _ in $(seq 2 "$ROUNDS"); do
  for server in redis embedded-fsync embedded-process; do refresh_run "$server" 32; done
done

# The same refresh chain with DPoP: every session bound at login, every refresh with a fresh
# proof (signed before the run by bench/dpop_prime.rs; the issuer verifies it and records its jti).
dpop_run() {
  local server="$1" conns="$2" port_var="PORT_${1//-/_}"
  "$ROOT/target/release/examples/dpop_prime" --url "http://127.0.0.1:${!port_var}" \
    --user "$USER_NAME" --password "$PASSWORD" --sessions $((conns + 4)) \
    --proofs $((DURATION * 25000)) --tokens "$TMP/dpop-tokens-$server.txt" \
    --proof-file "$TMP/dpop-proofs-$server.txt"
  wrk_run refresh_dpop "$server" "$conns" "$DURATION" refresh.lua "http://127.0.0.1:${!port_var}" \
    -- "$TMP/dpop-tokens-$server.txt" 2 "$TMP/dpop-proofs-$server.txt"
}
cargo build --release --quiet --example dpop_prime
for server in redis embedded-process; do
  refresh_run "$server" 32 refresh_plain
  dpop_run "$server" 32
done

# Authorization-code exchange at 32 connections: one atomic consume of the code, one family
# created, one signature. The codes are minted first with a sign-on cookie (bench/codes_prime.py).
VERIFIER="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
code_run() {
  local server="$1" port_var="PORT_${1//-/_}" codes="$TMP/codes-$1.txt" session="$TMP/sso-$1.txt"
  python3 bench/codes_prime.py "http://127.0.0.1:${!port_var}" "$USER_NAME" "$PASSWORD" bench-web \
    "http://127.0.0.1:9/callback" "$CHALLENGE" 0 "$session"
  # Mint for longer than the exchange runs: minting is cheaper than an exchange, so the
  # supply outlasts the run (a short one shows as starved).
  rm -f "$codes".*
  timeout $((DURATION * 2 + 60)) wrk -t2 -c16 -d"$((DURATION * 2))s" -s bench/wrk/mint_codes.lua \
    "http://127.0.0.1:${!port_var}" -- "$codes" "$(sed -n 1p "$session")" "$(sed -n 2p "$session")" >/dev/null
  cat "$codes".* >"$codes"
  echo "bench: $(wc -l <"$codes") codes minted on $server" >&2
  wrk_run code_exchange "$server" 32 "$DURATION" code.lua "http://127.0.0.1:${!port_var}" \
    -- "$codes" 2 bench-web "http%3A%2F%2F127.0.0.1%3A9%2Fcallback" "$VERIFIER"
}
for _ in $(seq 1 "$ROUNDS"); do
  for server in redis embedded-fsync embedded-process; do code_run "$server"; done
done

# Client credentials (no store write), with the server's CPU time for a per-core figure.
BASIC="$(printf '%s' "bench-service:$SECRET" | base64 -w0)"
# The first use of a secret costs one argon2 check (then a keyed digest in memory): not measured.
curl -sf -o /dev/null -H "Authorization: Basic $BASIC" -d grant_type=client_credentials \
  "http://127.0.0.1:$PORT_redis/oauth/token"
before="$(cpu_ticks "$PID_redis")"
for _ in $(seq 1 "$ROUNDS"); do
  wrk_run client_credentials redis 32 "$DURATION" client_credentials.lua "http://127.0.0.1:$PORT_redis" -- "$BASIC"
done
fact client_credentials_server_cpu_s "$(python3 -c "print(($(cpu_ticks "$PID_redis") - $before) / $(getconf CLK_TCK))")"

# Reads: JWKS, discovery, userinfo (the verify path).
base="http://127.0.0.1:$PORT_redis"
access="$(curl -sf -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USER_NAME\",\"password\":\"$PASSWORD\"}" "$base/auth/login" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
# The same userinfo on an issuer whose key is Ed25519 (same Redis server, a database of its own,
# where its bench user is created anew): the verification is the cost.
start_issuer eddsa "redis://127.0.0.1:$REDIS_PORT/1" fsync 19456 EdDSA
ed_base="http://127.0.0.1:$PORT_eddsa"
ed_access="$(curl -sf -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USER_NAME\",\"password\":\"$PASSWORD\"}" "$ed_base/auth/login" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
for _ in $(seq 1 "$ROUNDS"); do
  wrk_run jwks redis 32 "$DURATION" get.lua "$base/.well-known/jwks.json"
  wrk_run discovery redis 32 "$DURATION" get.lua "$base/.well-known/oauth-authorization-server"
  wrk_run userinfo redis 32 "$DURATION" get.lua "$base/auth/userinfo" -H "Authorization: Bearer $access"
  wrk_run userinfo_eddsa redis 32 "$DURATION" get.lua "$ed_base/auth/userinfo" -H "Authorization: Bearer $ed_access"
done

# Refresh while 50 connections log in without pause at the shipped argon2 cost.
tokens="$TMP/tokens-storm.txt"
python3 bench/prime.py "$base" "$USER_NAME" "$PASSWORD" 36 "$tokens" 4
wrk_run login_storm redis 50 $((DURATION + 4)) login.lua "$base" -- "$USER_NAME" "$PASSWORD" &
storm=$!
sleep 2
wrk_run refresh_during_logins redis 32 "$DURATION" refresh.lua "$base" -- "$tokens" 2
wait "$storm"

# Resident memory: the peak (VmHWM) of each issuer across everything above.
for server in redis embedded-fsync embedded-process; do
  pid_var="PID_${server//-/_}"
  fact "peak_rss_kib_$server" "$(awk '/VmHWM/{print $2}' "/proc/${!pid_var}/status")"
done

# Redis memory per live session: 10,000 sessions on a Redis of their own, after login and after
# ~30 rotations each (once the grace-window successors have expired). The argon2 cost is lowered
# for this issuer only: it does not change what a session stores.
start_redis sessions-redis SESSIONS_PORT
start_issuer sessions "redis://127.0.0.1:$SESSIONS_PORT/0" fsync 64
used_memory() { redis-cli -p "$SESSIONS_PORT" info memory | awk -F: '/^used_memory:/{print $2+0}'; }
key_memory() {
  redis-cli -p "$SESSIONS_PORT" eval \
    "local t = 0 for _, k in ipairs(redis.call('KEYS', 'lk:*')) do t = t + redis.call('MEMORY', 'USAGE', k) end return t" 0
}
empty="$(used_memory)"
python3 bench/prime.py "http://127.0.0.1:$PORT_sessions" "$USER_NAME" "$PASSWORD" 10000 "$TMP/sessions.txt" 8
fact sessions_after_login "{\"used_memory\": $(( $(used_memory) - empty )), \"key_memory\": $(key_memory)}"
wrk_run session_churn sessions 32 20 refresh.lua "http://127.0.0.1:$PORT_sessions" -- "$TMP/sessions.txt" 2
sleep 12
fact sessions_after_rotations "{\"used_memory\": $(( $(used_memory) - empty )), \"key_memory\": $(key_memory)}"

# Crypto references in the same run.
openssl speed -seconds 3 ecdsap256 rsa2048 ed25519 2>/dev/null \
  | grep -E "^rsa 2048|nistp256|Ed25519" >"$TMP/openssl.txt"
fact openssl_es256_sign_per_s "$(awk '/nistp256/{print $(NF-1)}' "$TMP/openssl.txt")"
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  echo "bench: criterion benches" >&2
  # Keys in a SoftHSM2 token of this run's own, signed through PKCS#11 beside the file keys.
  HSM_ENV=()
  if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
    mkdir -p "$TMP/softhsm/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
      "$TMP/softhsm/tokens" >"$TMP/softhsm/softhsm2.conf"
    HSM_ENV=(SOFTHSM2_CONF="$TMP/softhsm/softhsm2.conf" LATCHKEY_BENCH_HSM_PIN=135790
             LATCHKEY_BENCH_HSM_TOKEN=bench)
    env "${HSM_ENV[@]}" softhsm2-util --init-token --free --label bench --so-pin 97531975 \
      --pin 135790 >/dev/null
    for key in "ES256 hsm-es" "RS256 hsm-rs"; do
      set -- $key
      env "${HSM_ENV[@]}" "$BIN" keys generate-hsm --alg "$1" --kid "$2" \
        --module /usr/lib/softhsm/libsofthsm2.so --token bench --pin-env LATCHKEY_BENCH_HSM_PIN >/dev/null
    done
  fi
  { cargo bench -q -p latchkey-verify --bench verify 2>/dev/null | grep -E "^verify/|time:"
    env "${HSM_ENV[@]}" cargo bench -q -p latchkey --bench issuer 2>/dev/null \
      | grep -E "^(sign/|refresh)|time:"; } >"$TMP/criterion.txt"
else
  : >"$TMP/criterion.txt"
fi

python3 bench/report.py --results "$RESULTS" --facts "$FACTS" --openssl "$TMP/openssl.txt" \
  --criterion "$TMP/criterion.txt" --duration "$DURATION" --rounds "$ROUNDS" --out BENCHMARKS.md \
  --svg bench/refresh-vs-connections.svg
echo "bench: wrote BENCHMARKS.md and bench/refresh-vs-connections.svg" >&2
