#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) instead of wall-clock throughput, for a machine that
# other work keeps busy: the count of a run does not depend on how much CPU the process got.
#
#   bash bench/instructions.sh CERTD_BINARY [LABEL]
#
# Needs valgrind, perf, nginx, curl, pebble, pebble-challtestsrv, openssl (caddy for its row). Starts a local Pebble (real
# HTTP-01 validation, scripts/local-pebble.sh), an nginx upstream answering 1 KiB on loopback, and:
#   1. `certd issue` under callgrind, one certificate for two names from a fresh state folder
#      (new account): total instructions, and the part in aws-lc's CPU jitter entropy collector
#      (inclusive cost of `tree_jitter_initialize`; jitterentropy loops on timer readings, so under
#      valgrind this share is larger than in a normal run); then 3 runs without valgrind, CPU time
#      (`perf stat -e task-clock`, all threads) and wall time, and Caddy obtaining the same two names
#      (one certificate each), CPU time until both are on disk;
#   2. `certd run` under callgrind, then curl sending N HTTPS keep-alive requests on ONE connection
#      (HTTP/1.1, GET /), for N = $BENCH_FEW and $BENCH_MANY: the difference of the two totals divided
#      by the difference of N is the instructions per proxied keep-alive request, start-up, the
#      handshake and shutdown cancelling out;
#   3. the same for nginx (`daemon off; master_process off;`, one worker process, upstream keepalive),
#      unless BENCH_NGINX=0.
# Prints one line per figure; BENCH_KEEP=1 keeps the work folder; BENCH_RUN=0 stops after issuance,
# BENCH_CADDY=0 leaves Caddy out.
set -euo pipefail

certd=$(readlink -f "${1:?usage: bench/instructions.sh CERTD_BINARY [LABEL]}")
label="${2:-$(basename "$certd")}"
few="${BENCH_FEW:-200}"
many="${BENCH_MANY:-1200}"
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/certd-instructions.XXXXXX)
chmod 755 "$work" # the upstream nginx's workers (user nobody) read its file
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# shellcheck source=scripts/local-pebble.sh
. "$repo/scripts/local-pebble.sh"
for port in up_port certd_port nginx_port; do pick_port "$port"; done
start_pebble "$work" "certd instructions CA"

total_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
inclusive_ir() { # file, function-name pattern: the largest inclusive cost of a matching function
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk -v pat="$2" '$0 ~ pat { gsub(",", "", $1); if ($1 + 0 > best) best = $1 + 0 } END { print best + 0 }'
}

# --- the upstream: nginx answering 1 KiB, not measured -----------------------------------------------
mkdir -p "$work/up"
head -c 1024 /dev/zero | tr '\0' 'x' >"$work/up/index.html"
cat >"$work/up/nginx.conf" <<NGINX
daemon off; worker_processes 1; pid $work/up/nginx.pid; error_log $work/up/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$up_port; root $work/up; } }
NGINX
nginx -c "$work/up/nginx.conf" -p "$work/up" >"$work/up.log" 2>&1 </dev/null &
pids+=($!)
wait_port "$up_port"

config() { # state_dir https_port names...
    local state="$1" https="$2"; shift 2
    local names; names=$(printf '"%s", ' "$@"); names="[${names%, }]"
    cat <<TOML
state_dir = "$state"

[acme]
directory = "https://127.0.0.1:$acme_port/dir"
agree_tos = true
ca_roots = "$pebble_ca"
key_type = "ecdsa-p256"

[http]
listen = ["127.0.0.1:$http_port"]

[https]
listen = ["127.0.0.1:$https"]

[preflight]
resolver = "127.0.0.1:$dns_port"

[limits]
grace_period = "1s"

[log]
access_format = "combined"
access_file = "$work/access.log"

[[site]]
names = $names

  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:$up_port"
TOML
}

# --- 1. certd issue ------------------------------------------------------------------------------
mkdir -p "$work/issue"
config "$work/issue/state" "$certd_port" issue-a.test issue-b.test >"$work/issue/certd.toml"
# Up to 3 tries: on a loaded machine a CA connection of a process slowed down by valgrind can break.
for try in 1 2 3; do
    valgrind --tool=callgrind --callgrind-out-file="$work/issue/cg.out" \
        "$certd" issue --config "$work/issue/certd.toml" >"$work/issue/log" 2>&1 && break
    [ "$try" = 3 ] && { tail -n 30 "$work/issue/log" >&2; exit 1; }
    echo "certd issue under valgrind failed (try $try): $(grep -v '^==' "$work/issue/log" | tail -n 1)" >&2
done
[ -s "$work/issue/state/certs/issue-a.test/fullchain.pem" ] || { echo "certd issue left no certificate" >&2; exit 1; }
issue_ir=$(total_ir "$work/issue/cg.out")
jitter_ir=$(inclusive_ir "$work/issue/cg.out" 'tree_jitter_initialize|jent_entropy_init')
echo "$label certd-issue instructions $issue_ir"
echo "$label certd-issue jitter-entropy-instructions $jitter_ir"
for round in 1 2 3; do # without valgrind, each from a fresh state folder (a new account)
    config "$work/issue/state-$round" "$certd_port" issue-a.test issue-b.test >"$work/issue/plain.toml"
    t0=$(date +%s%N)
    perf stat -x, -e task-clock -o "$work/issue/perf-plain" \
        "$certd" issue --config "$work/issue/plain.toml" >"$work/issue/log-plain" 2>&1 ||
        { tail -n 30 "$work/issue/log-plain" >&2; exit 1; }
    wall=$(( ($(date +%s%N) - t0) / 1000000 ))
    cpu=$(awk -F, '/task-clock/ { printf "%.1f", $1 }' "$work/issue/perf-plain")
    echo "$label certd-issue-plain cpu-ms $cpu wall-ms $wall"
done

# --- 1b. Caddy's issuance, CPU time (Go under callgrind is not meaningful) ------------------------
if [ "${BENCH_CADDY:-1}" = 1 ] && command -v caddy >/dev/null; then
    for round in 1 2 3; do
        dir="$work/caddy-$round"
        mkdir -p "$dir"
        cat >"$dir/Caddyfile" <<CADDY
{
	admin off
	http_port $http_port
	https_port $certd_port
	storage file_system $dir/storage
	skip_install_trust
	ocsp_stapling off
	cert_issuer acme https://127.0.0.1:$acme_port/dir {
		trusted_roots $pebble_ca
		disable_tlsalpn_challenge
	}
}
issue-a.test, issue-b.test {
	bind 127.0.0.1
	respond "ok"
}
CADDY
        t0=$(date +%s%N)
        env HOME="$dir" XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
            perf stat -x, -e task-clock -o "$dir/perf" \
            caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 </dev/null &
        pid=$!
        pids+=("$pid")
        got=0
        for _ in $(seq 3000); do
            got=$({ find "$dir/storage/certificates" -name '*.crt' 2>/dev/null || true; } | wc -l)
            [ "$got" -ge 2 ] && break
            sleep 0.02
        done
        wall=$(( ($(date +%s%N) - t0) / 1000000 ))
        # perf's child is caddy: TERM it, and perf reports the CPU of its whole life.
        pkill -TERM -P "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        [ "$got" -ge 2 ] || { echo "Caddy obtained $got certificates" >&2; exit 1; }
        cpu=$(awk -F, '/task-clock/ { printf "%.1f", $1 }' "$dir/perf")
        echo "caddy-$(caddy version | cut -d' ' -f1) issue-two-certificates cpu-ms $cpu wall-ms-until-both-on-disk $wall"
    done
fi

[ "${BENCH_RUN:-1}" = 1 ] || exit 0 # BENCH_RUN=0: issuance only

# --- 2. certd run, keep-alive requests ------------------------------------------------------------
mkdir -p "$work/run"
config "$work/run/state" "$certd_port" bench.test >"$work/run/certd.toml"
"$certd" issue --config "$work/run/certd.toml" >"$work/run/issue.log" 2>&1 ||
    { tail -n 30 "$work/run/issue.log" >&2; exit 1; }

requests() { # port count → the number of 200s, all on one connection
    local port="$1" count="$2" i
    : >"$work/curl.cfg"
    for i in $(seq "$count"); do
        printf 'url = "https://bench.test:%s/"\noutput = "/dev/null"\n' "$port" >>"$work/curl.cfg"
    done
    curl -sk --http1.1 --resolve "bench.test:$port:127.0.0.1" -K "$work/curl.cfg" \
        -w '%{http_code} %{num_connects}\n' >"$work/curl.out"
    local connects
    connects=$(awk '{ s += $2 } END { print s }' "$work/curl.out")
    [ "$connects" = 1 ] || echo "warning: $connects connections for $count requests" >&2
    grep -c '^200 ' "$work/curl.out"
}

measure_certd() { # count → total instructions of a certd run serving count requests
    local count="$1" pid
    rm -f "$work/run/cg.out"
    (cd "$work/run" && exec valgrind --tool=callgrind --callgrind-out-file="$work/run/cg.out" \
        "$certd" run --config certd.toml) >"$work/run/run.log" 2>&1 </dev/null &
    pid=$!
    pids+=("$pid")
    wait_port "$certd_port"
    requests "$certd_port" 5 >/dev/null # warm: the first handshake, the first upstream connection
    local ok
    ok=$(requests "$certd_port" "$count")
    [ "$ok" = "$count" ] || { echo "certd answered $ok of $count with 200" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    total_ir "$work/run/cg.out"
}

# One curl per count, so the handshake cost is the same in both and cancels out.
a=$(measure_certd "$few")
b=$(measure_certd "$many")
echo "$label certd-run instructions-per-keepalive-request $(( (b - a) / (many - few) )) ($few: $a, $many: $b)"

# --- 3. nginx, the same way ------------------------------------------------------------------------
if [ "${BENCH_NGINX:-1}" = 1 ]; then
    live="$work/run/state/certs/bench.test"
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log $work/nginx/access.log;
  upstream app { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port ssl; server_name bench.test;
    ssl_certificate $live/fullchain.pem; ssl_certificate_key $live/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 100000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme; }
  }
}
NGINX
    measure_nginx() {
        local count="$1" pid
        rm -f "$work/nginx/cg.out"
        valgrind --tool=callgrind --callgrind-out-file="$work/nginx/cg.out" \
            nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx/run.log" 2>&1 </dev/null &
        pid=$!
        pids+=("$pid")
        wait_port "$nginx_port"
        requests "$nginx_port" 5 >/dev/null
        local ok
        ok=$(requests "$nginx_port" "$count")
        [ "$ok" = "$count" ] || { echo "nginx answered $ok of $count with 200" >&2; exit 1; }
        kill -QUIT "$pid"
        wait "$pid" 2>/dev/null || true
        total_ir "$work/nginx/cg.out"
    }
    a=$(measure_nginx "$few")
    b=$(measure_nginx "$many")
    echo "nginx-$(nginx -v 2>&1 | sed 's/.*nginx\///') run instructions-per-keepalive-request $(( (b - a) / (many - few) )) ($few: $a, $many: $b)"
fi
