#!/usr/bin/env bash
# certd side by side with nginx, on this machine, in one run. Not part of the test suite.
#
#   bash bench/run.sh                  # the full run, about 8 minutes on 2 cores
#   BENCH_QUICK=1 bash bench/run.sh    # shorter runs, fewer swaps and sites: about 2-3 minutes
#
# Knobs: BENCH_ROUNDS (A/B rounds, default 2), BENCH_SECONDS (per wrk/websocket run, default
# 10, quick 3), BENCH_H2_REQUESTS (h2load -n, default 200000, quick 40000), BENCH_SWAPS (certificate
# swaps under load, default 100, quick 20), BENCH_SITES (scale test, default 10000, quick 2000),
# BENCH_HOLD (held connections and websocket tunnels, default 2000), BENCH_ISSUE_ROUNDS (issuance
# rounds against Caddy, default 3), BENCH_KEEP=1 (keep the scratch folder and its logs),
# BENCH_RESULTS=<file> (also write the results table there).
#
# What it does, all on loopback (see bench/README.md for the why of each choice):
#  1. installs what is missing with apt-get (nginx, wrk, nghttp2-client for h2load, pebble, openssl,
#     curl, procps, caddy) and builds `certd` and the benchmark helpers (`examples/bench_*.rs`) in release;
#  2. starts Pebble with real HTTP-01 validation (pebble-challtestsrv answering 127.0.0.1 for every
#     name, validation always real) and gets ONE certificate for bench.test with `certd issue`;
#  2b. times issuance against Caddy (BENCH_ISSUE_ROUNDS rounds, default 3): `certd issue` of one
#     certificate for two names, and Caddy obtaining its certificates for the same two names from the
#     same Pebble (acme_ca pointing at it, its root trusted, HTTP-01 on Pebble's port), fresh state each;
#  3. starts the upstreams (bench_upstream: 1 KiB answers; bench_ws echo), `certd run`, and nginx
#     configured the same way (same certificate files from certd's state directory, same upstream,
#     TLS 1.2+1.3, HTTP/1.1 and HTTP/2, 2 workers, pooled keep-alive upstream connections, /ws);
#  4. maps bench.test to 127.0.0.1 in /etc/hosts for the run (wrk and h2load take the SNI from the
#     URL), and puts the file back exactly as it was on exit;
#  5. measures certd and nginx interleaved (A B A B ...), taking medians: wrk keep-alive requests/s
#     and p50/p99, h2load HTTP/2 requests/s, new TLS handshakes/s (wrk with Connection: close),
#     websocket echo messages/s, memory idle and with 2,000 held TLS connections;
#  5b. holds BENCH_HOLD websocket tunnels open through each server (bench_ws hold) and reads its memory;
#  6. swaps certd's certificate BENCH_SWAPS times (`certd issue --force`, through the daemon, real
#     ACME orders) while wrk loads it, and counts errors;
#  7. makes BENCH_SITES sites with certificates (bench_gen_sites), starts `certd run` on them and
#     times the first and the last name being served, its memory, and handshakes/s with one name
#     versus a random name among all of them.
# Everything it started is stopped on exit (by pid), and the scratch folder is removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

quick="${BENCH_QUICK:-}"
rounds="${BENCH_ROUNDS:-2}"
seconds="${BENCH_SECONDS:-$([ -n "$quick" ] && echo 3 || echo 10)}"
h2_requests="${BENCH_H2_REQUESTS:-$([ -n "$quick" ] && echo 40000 || echo 200000)}"
swaps="${BENCH_SWAPS:-$([ -n "$quick" ] && echo 20 || echo 100)}"
sites="${BENCH_SITES:-$([ -n "$quick" ] && echo 2000 || echo 10000)}"
hold="${BENCH_HOLD:-2000}"
name="bench.test"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- prerequisites ----------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v pgrep >/dev/null || missing+=(procps)
command -v caddy >/dev/null || missing+=(caddy)
command -v cc >/dev/null || missing+=(build-essential)
command -v cargo >/dev/null || missing+=(cargo rustc)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    as_root apt-get update -qq
    # On a machine with systemd this also starts Debian's own nginx on :80; ours runs apart from it.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "building certd and the benchmark helpers (cargo build --release --bin certd --examples)"
cargo build --locked --release --bin certd --examples
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
certd="$bin/certd"
examples="$bin/examples"

# --- scratch folder, cleanup ------------------------------------------------------------------------
work="$(mktemp -d /tmp/certd-bench.XXXXXX)"
pids=()
hosts_line=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Newest first: clients before servers, certd before Pebble.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$hosts_line" ]; then
        # Byte for byte as it was; if something else edited it meanwhile, only our line goes.
        # Rewritten in place (cat, not mv) because /etc/hosts may be a bind mount.
        if cmp -s /etc/hosts "$work/hosts.ours"; then
            cp "$work/hosts.orig" "$work/hosts.new"
        else
            grep -vxF "$hosts_line" /etc/hosts >"$work/hosts.new" || true
        fi
        as_root sh -c 'cat "$1" > /etc/hosts' _ "$work/hosts.new" && note "/etc/hosts restored"
    fi
    if [ "$status" -ne 0 ]; then
        echo "bench failed (exit $status); last log lines:" >&2
        for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }; done
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Many connections: 2,000 held ones, plus upstream connections, plus the load generators'.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((hold * 3)) ] ||
    { echo "ulimit -n is $(ulimit -n); need at least $((hold * 3)) open files" >&2; exit 1; }

# shellcheck source=scripts/local-pebble.sh
. "$repo/scripts/local-pebble.sh"
for port in up_port ws_port certd_port nginx_port scale_https scale_http; do pick_port "$port"; done

# --- Pebble, as in scripts/demo.sh ------------------------------------------------------------------
step "Pebble with real HTTP-01 validation"
start_pebble "$work" "certd bench CA"
note "ACME on 127.0.0.1:$acme_port, HTTP-01 validated on :$http_port"

# --- upstreams --------------------------------------------------------------------------------------
step "upstreams: bench_upstream (1 KiB) on :$up_port, bench_ws echo on :$ws_port"
"$examples/bench_upstream" "127.0.0.1:$up_port" >"$work/upstream.log" 2>&1 </dev/null &
pids+=($!)
"$examples/bench_ws" echo "127.0.0.1:$ws_port" >"$work/ws-echo.log" 2>&1 </dev/null &
pids+=($!)
wait_port "$up_port"
wait_port "$ws_port"

# --- one certificate, from Pebble, for both servers -------------------------------------------------
mkdir -p "$work/certd"
cat >"$work/certd/certd.toml" <<TOML
state_dir = "state"

[acme]
directory = "https://127.0.0.1:$acme_port/dir"
agree_tos = true
ca_roots = "$pebble_ca"
key_type = "ecdsa-p256"

[http]
listen = ["127.0.0.1:$http_port"]   # Pebble's httpPort: where it validates HTTP-01

[https]
listen = ["127.0.0.1:$certd_port"]

[preflight]
resolver = "127.0.0.1:$dns_port"    # challtestsrv, the DNS Pebble uses too

[limits]
grace_period = "2s"

[[site]]
names = ["$name"]

  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:$up_port"

  [[site.route]]
  path = "/ws"
  proxy = "http://127.0.0.1:$ws_port"
TOML
step "certd issue: one certificate for $name from Pebble"
"$certd" issue --config "$work/certd/certd.toml" >"$work/issue.log" 2>&1 ||
    { cat "$work/issue.log" >&2; exit 1; }
note "$(grep "^$name:" "$work/issue.log")"
live="$work/certd/state/certs/$name"
openssl x509 -in "$live/cert.pem" -noout -subject -issuer -serial >&2

# --- issuance: certd against Caddy, from the same Pebble -----------------------------------------------
# Before `certd run` starts, while Pebble's HTTP-01 port is free: each round, certd issues ONE
# certificate for two names and Caddy obtains its certificates for the same two names (Caddy makes one
# per name), each from a fresh state folder (a new ACME account, nothing cached), timed from the
# process start until the certificate files are on disk. Rounds interleave certd and Caddy.
issue_rounds="${BENCH_ISSUE_ROUNDS:-3}"
issue_names=(issue-a.test issue-b.test)   # challtestsrv answers 127.0.0.1 for every name
issue_certd=() issue_caddy=() issue_caddy_each=()
pick_port issue_https
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for round in $(seq "$issue_rounds"); do
    step "issuance round $round/$issue_rounds: certd issue (one certificate, ${issue_names[*]}), then Caddy"
    dir="$work/issue-certd-$round"
    mkdir -p "$dir"
    cat >"$dir/certd.toml" <<TOML
state_dir = "state"

[acme]
directory = "https://127.0.0.1:$acme_port/dir"
agree_tos = true
ca_roots = "$pebble_ca"
key_type = "ecdsa-p256"

[http]
listen = ["127.0.0.1:$http_port"]

[https]
listen = ["127.0.0.1:$issue_https"]

[preflight]
resolver = "127.0.0.1:$dns_port"

[[site]]
names = ["${issue_names[0]}", "${issue_names[1]}"]
TOML
    t0=$(date +%s%N)
    (cd "$dir" && exec "$certd" issue --config certd.toml) >"$dir/issue.log" 2>&1 </dev/null ||
        { cat "$dir/issue.log" >&2; exit 1; }
    took=$(ms_since "$t0")
    [ -s "$dir/state/certs/${issue_names[0]}/fullchain.pem" ] ||
        { echo "certd issue left no certificate" >&2; exit 1; }
    issue_certd+=("$took")
    note "certd: one certificate for two names in $took ms"

    dir="$work/issue-caddy-$round"
    mkdir -p "$dir"
    cat >"$dir/Caddyfile" <<CADDY
{
	admin off
	http_port $http_port
	https_port $issue_https
	storage file_system $dir/storage
	skip_install_trust
	ocsp_stapling off
	cert_issuer acme https://127.0.0.1:$acme_port/dir {
		trusted_roots $pebble_ca
		disable_tlsalpn_challenge
	}
}
${issue_names[0]}, ${issue_names[1]} {
	bind 127.0.0.1
	respond "ok"
}
CADDY
    t0=$(date +%s%N)
    env HOME="$dir" XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
        caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 </dev/null &
    caddy_pid=$!
    pids+=("$caddy_pid")
    got=0
    for _ in $(seq 6000); do   # 60 s at most
        got=$({ find "$dir/storage/certificates" -name '*.crt' 2>/dev/null || true; } | wc -l)
        [ "$got" -ge "${#issue_names[@]}" ] && break
        sleep 0.01
    done
    took=$(ms_since "$t0")
    kill "$caddy_pid" 2>/dev/null || true
    wait "$caddy_pid" 2>/dev/null || true
    [ "$got" -ge "${#issue_names[@]}" ] || { tail -n 20 "$dir/caddy.log" >&2; echo "Caddy obtained $got certificates" >&2; exit 1; }
    issue_caddy+=("$took")
    # Caddy's own account of each certificate: "obtaining certificate" to "certificate obtained".
    each=$(awk -F'"ts":' '/"obtaining certificate"/ { split($2, t, ","); start[++n] = t[1] }
        /"certificate obtained successfully"/ { split($2, t, ","); s += t[1]; m++ }
        END { for (i = 1; i <= n; i++) s -= start[i]; if (m) printf "%.0f", s * 1000 / m }' "$dir/caddy.log")
    issue_caddy_each+=("${each:-0}")
    note "Caddy: ${#issue_names[@]} certificates in $took ms (each ${each:-?} ms from its own log)"
done

# --- bench.test → 127.0.0.1 for wrk and h2load ------------------------------------------------------
step "mapping $name to 127.0.0.1 in /etc/hosts for this run"
hosts_line="127.0.0.1 $name # certd bench/run.sh $$, removed on exit"
cp /etc/hosts "$work/hosts.orig"
{
    cat "$work/hosts.orig"
    [ -z "$(tail -c 1 "$work/hosts.orig")" ] || echo   # the file may not end in a newline
    printf '%s\n' "$hosts_line"
} >"$work/hosts.ours"
as_root sh -c 'cat "$1" > /etc/hosts' _ "$work/hosts.ours"

# --- the two servers --------------------------------------------------------------------------------
step "certd run on :$certd_port"
(cd "$work/certd" && exec "$certd" run --config certd.toml) >"$work/certd.log" 2>&1 </dev/null &
certd_pid=$!
pids+=("$certd_pid")

mkdir -p "$work/nginx/tmp"
cores=$(nproc)
cat >"$work/nginx/nginx.conf" <<NGINX
# The nginx side of the comparison: what certd does, configured the way a careful admin would.
worker_processes $cores;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;

events {
    worker_connections 8192;
}

http {
    access_log $work/nginx/access.log;    # certd logs one line per request too
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    # nginx closes a keep-alive connection after 1000 requests by default; certd does not.
    keepalive_requests 1000000;

    upstream app {
        server 127.0.0.1:$up_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream ws {
        server 127.0.0.1:$ws_port;
    }

    server {
        listen 127.0.0.1:$nginx_port ssl http2;
        server_name $name;
        ssl_certificate $live/fullchain.pem;
        ssl_certificate_key $live/privkey.pem;
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
        location /ws {
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host \$host;
            proxy_read_timeout 1h;
        }
    }
}
NGINX
step "nginx on :$nginx_port ($cores workers), same certificate files"
nginx -t -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx-t.log" 2>&1 ||
    { cat "$work/nginx-t.log" >&2; exit 1; }
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx.log" 2>&1 </dev/null &
nginx_pid=$!
pids+=("$nginx_pid")
wait_port "$certd_port"
wait_port "$nginx_port"

port_of() { [ "$1" = certd ] && echo "$certd_port" || echo "$nginx_port"; }
url_of() { echo "https://$name:$(port_of "$1")/"; }
# The processes that make up a server: certd's one, or nginx's master and workers.
pids_of() {
    if [ "$1" = certd ]; then echo "$certd_pid"; else echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"; fi
}
sum_status() { # $1: field of /proc/<pid>/status or smaps_rollup, $2: file, rest: pids → KiB
    local field="$1" file="$2" total=0 value pid
    shift 2
    for pid in "$@"; do
        value=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/$file" 2>/dev/null || true)
        total=$((total + ${value:-0}))
    done
    echo "$total"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# CPU time used so far by a server's processes, user and system, in clock ticks: "<user> <system>".
cpu_ticks() {
    local pid user=0 system=0 u s
    for pid in $(pids_of "$1"); do
        read -r u s < <(awk '{ print $14, $15 }' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
        user=$((user + u)) system=$((system + s))
    done
    echo "$user $system"
}
clock_ticks=$(getconf CLK_TCK)
per_request_us() { # ticks, requests → microseconds per request
    awk -v t="$1" -v n="$2" -v hz="$clock_ticks" 'BEGIN { if (n == 0) print 0; else printf "%.1f", t * 1e6 / hz / n }'
}
rss_mib() { mib "$(sum_status VmRSS status $(pids_of "$1"))"; }
pss_mib() { mib "$(sum_status Pss smaps_rollup $(pids_of "$1"))"; }

# Both must answer the same thing before anything is measured.
for server in certd nginx; do
    body=$(curl -sS --fail --resolve "$name:$(port_of $server):127.0.0.1" -k "$(url_of $server)")
    [ "${#body}" -eq 1024 ] || { echo "$server did not proxy the 1 KiB answer" >&2; exit 1; }
    served=$(openssl s_client -connect "127.0.0.1:$(port_of $server)" -servername "$name" </dev/null 2>/dev/null |
        openssl x509 -noout -serial)
    note "$server: 200 with the 1 KiB body, serving $served"
done
sleep 1

# --- results ----------------------------------------------------------------------------------------
declare -A results # "<server> <metric>" → the values of every round, space-separated
record() { results["$1 $2"]+="$3 "; }
median() { # of the numbers given
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
to_ms() { # wrk latency "812.00us" / "1.23ms" / "1.05s" → ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
errors_total=0
wrk_errors() { # wrk output file → socket errors + non-2xx responses
    awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
         /Non-2xx or 3xx responses:/ { s += $5 } END { print s + 0 }' "$1"
}

for server in certd nginx; do
    record "$server" rss_idle "$(rss_mib $server)"
    record "$server" pss_idle "$(pss_mib $server)"
done

# --- A/B rounds -------------------------------------------------------------------------------------
for round in $(seq "$rounds"); do
    for server in certd nginx; do
        step "round $round/$rounds: $server"
        out="$work/r$round-$server"
        url="$(url_of $server)"

        read -r user0 system0 < <(cpu_ticks "$server")
        wrk -t2 -c64 -d"${seconds}s" --latency "$url" >"$out.wrk" 2>&1
        read -r user1 system1 < <(cpu_ticks "$server")
        requests=$(awk '/requests in/ { print $1 }' "$out.wrk")
        user_us=$(per_request_us $((user1 - user0)) "${requests:-0}")
        system_us=$(per_request_us $((system1 - system0)) "${requests:-0}")
        record "$server" user_us "$user_us"; record "$server" system_us "$system_us"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out.wrk")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out.wrk")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out.wrk")")
        errs=$(wrk_errors "$out.wrk")
        record "$server" rps "$rps"; record "$server" p50 "$p50"; record "$server" p99 "$p99"
        record "$server" errors "$errs"
        note "HTTP/1.1 keep-alive: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $errs; CPU per request: user $user_us µs, system $system_us µs"

        h2load -n "$h2_requests" -c 64 -m 10 "$url" >"$out.h2load" 2>&1 || true
        h2rps=$(awk '/^finished in/ { print $4 }' "$out.h2load")
        h2ok=$(awk '/^status codes:/ { print $3 }' "$out.h2load")
        h2err=$(( h2_requests - ${h2ok:-0} ))
        record "$server" h2rps "${h2rps:-0}"; record "$server" errors "$h2err"
        grep -q 'h2$' <(awk '/^Application protocol:/ { print $3 }' "$out.h2load") ||
            note "warning: h2load did not negotiate h2 with $server"
        note "HTTP/2: ${h2rps:-0} req/s, failed $h2err"

        wrk -t2 -c64 -d"${seconds}s" -H "Connection: close" "$url" >"$out.close" 2>&1
        hs=$(awk '/^Requests\/sec:/ { print $2 }' "$out.close")
        errs=$(wrk_errors "$out.close")
        record "$server" handshakes "$hs"; record "$server" errors "$errs"
        note "new TLS connection per request: $hs/s, errors $errs"

        "$examples/bench_ws" load --addr "127.0.0.1:$(port_of $server)" --name "$name" --path /ws \
            --connections 64 --seconds "$seconds" >"$out.ws" 2>&1
        ws=$(sed -n 's/.*messages_per_s=\([0-9.]*\).*/\1/p' "$out.ws")
        errs=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' "$out.ws")
        record "$server" ws "${ws:-0}"; record "$server" errors "${errs:-1}"
        note "websocket echo: ${ws:-0} messages/s, errors ${errs:-?}"
    done
done

for server in certd nginx; do
    record "$server" rss_after "$(rss_mib $server)"
done

# --- memory with many open connections --------------------------------------------------------------
for server in certd nginx; do
    step "$hold TLS keep-alive connections held open on $server"
    "$examples/bench_tls" hold --addr "127.0.0.1:$(port_of $server)" --name "$name" \
        --connections "$hold" --seconds 60 >"$work/hold-$server.log" 2>&1 </dev/null &
    holder=$!
    pids+=("$holder")
    for _ in $(seq 600); do grep -q '^held=' "$work/hold-$server.log" && break; sleep 0.1; done
    sleep 1
    record "$server" rss_hold "$(rss_mib $server)"
    record "$server" pss_hold "$(pss_mib $server)"
    held=$(sed -n 's/^held=\([0-9]*\).*/\1/p' "$work/hold-$server.log")
    note "$(head -n 1 "$work/hold-$server.log"); RSS $(rss_mib $server) MiB"
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    [ "${held:-0}" -eq "$hold" ] || record "$server" errors $((hold - ${held:-0}))
    sleep 2
done

# --- memory with many open websocket tunnels -------------------------------------------------------
for server in certd nginx; do
    step "$hold websocket tunnels held open through $server"
    "$examples/bench_ws" hold --addr "127.0.0.1:$(port_of $server)" --name "$name" --path /ws \
        --connections "$hold" --seconds 60 >"$work/wshold-$server.log" 2>&1 </dev/null &
    holder=$!
    pids+=("$holder")
    for _ in $(seq 600); do grep -q '^held=' "$work/wshold-$server.log" && break; sleep 0.1; done
    sleep 1
    record "$server" rss_wshold "$(rss_mib $server)"
    record "$server" pss_wshold "$(pss_mib $server)"
    held=$(sed -n 's/^held=\([0-9]*\).*/\1/p' "$work/wshold-$server.log")
    note "$(grep '^held=' "$work/wshold-$server.log" || true); PSS $(pss_mib $server) MiB"
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    [ "${held:-0}" -eq "$hold" ] || record "$server" errors $((hold - ${held:-0}))
    sleep 2
done

# A minute after the last load (the websocket tunnels above): is the memory back near idle?
step "memory a minute after the last load"
sleep "${BENCH_AFTER_SECONDS:-60}"
for server in certd nginx; do
    record "$server" rss_minute "$(rss_mib $server)"
    record "$server" pss_minute "$(pss_mib $server)"
done
note "a minute after the load: certd RSS $(rss_mib certd) MiB, nginx $(rss_mib nginx) MiB"

# --- hot swap under load ----------------------------------------------------------------------------
step "hot swap: $swaps x certd issue --force $name while wrk loads certd"
serial_before=$(openssl x509 -in "$live/cert.pem" -noout -serial)
# Keep-alive load, and a connection-per-request load whose every handshake picks the current certificate.
wrk -t1 -c48 -d600s "$(url_of certd)" >"$work/swap-keepalive.wrk" 2>&1 &
swap_wrk1=$!
pids+=("$swap_wrk1")
wrk -t1 -c16 -d600s -H "Connection: close" "$(url_of certd)" >"$work/swap-close.wrk" 2>&1 &
swap_wrk2=$!
pids+=("$swap_wrk2")
sleep 1
swap_started=$(date +%s.%N)
swapped=0
swap_budget="${BENCH_SWAP_SECONDS:-300}"   # stop early rather than run for ever on a slow machine
for i in $(seq "$swaps"); do
    [ $(( $(date +%s) - ${swap_started%.*} )) -lt "$swap_budget" ] || { note "swap time budget over after $((i - 1))"; break; }
    if timeout 60 "$certd" issue --force --config "$work/certd/certd.toml" "$name" \
        >>"$work/swap-issue.log" 2>&1; then
        swapped=$((swapped + 1))
    fi
done
swap_seconds=$(awk -v s="$swap_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
kill -INT "$swap_wrk1" "$swap_wrk2" 2>/dev/null || true
wait "$swap_wrk1" 2>/dev/null || true
wait "$swap_wrk2" 2>/dev/null || true
swap_ok=$(awk '/requests in/ { s += $1 } END { print s + 0 }' "$work/swap-keepalive.wrk" "$work/swap-close.wrk")
swap_errors=$(( $(wrk_errors "$work/swap-keepalive.wrk") + $(wrk_errors "$work/swap-close.wrk") ))
serial_after=$(openssl x509 -in "$live/cert.pem" -noout -serial)
serial_served=$(openssl s_client -connect "127.0.0.1:$certd_port" -servername "$name" </dev/null 2>/dev/null |
    openssl x509 -noout -serial)
issued_lines=$(grep -c "^$name: issued serial" "$work/swap-issue.log" || true)
note "$swapped/$swaps issues succeeded ($issued_lines certificates issued) in $swap_seconds s"
note "requests during the swaps: $swap_ok, non-2xx + socket errors: $swap_errors"
note "stored serial before $serial_before, after $serial_after; new handshakes get $serial_served"
swap_current=$([ "$serial_served" = "$serial_after" ] && [ "$serial_after" != "$serial_before" ] && echo yes || echo NO)

# --- scale: many sites ------------------------------------------------------------------------------
step "scale: $sites sites (bench_gen_sites), then certd run on them"
"$examples/bench_gen_sites" --dir "$work/scale" --sites "$sites" \
    --https "127.0.0.1:$scale_https" --http "127.0.0.1:$scale_http" \
    --upstream "http://127.0.0.1:$up_port" >"$work/gen-sites.log" 2>&1
note "$(cat "$work/gen-sites.log")"
scale_t0=$(date +%s%N)
(cd "$work/scale" && exec "$certd" run --config certd.toml) >"$work/scale-certd.log" 2>&1 </dev/null &
scale_pid=$!
pids+=("$scale_pid")
"$examples/bench_tls" ready --addr "127.0.0.1:$scale_https" --names "$work/scale/names.txt" \
    --ca "$work/scale/ca.pem" --since-ns "$scale_t0" --timeout 120 >"$work/scale-ready.log" 2>&1 ||
    { cat "$work/scale-ready.log" >&2; exit 1; }
ready_line=$(tail -n 1 "$work/scale-ready.log")
note "$ready_line"
kv() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
scale_first=$(kv first_ms "$ready_line") scale_last=$(kv last_ms "$ready_line")
scale_ok=$(kv names_ok "$ready_line") scale_rss=$(mib "$(sum_status VmRSS status "$scale_pid")")
one_name=$(head -n 1 "$work/scale/names.txt")
hs_one=() hs_many=()
for _ in $(seq 2); do
    line=$("$examples/bench_tls" handshakes --addr "127.0.0.1:$scale_https" --name "$one_name" --seconds 5)
    hs_one+=("$(kv handshakes_per_s "$line")")
    line=$("$examples/bench_tls" handshakes --addr "127.0.0.1:$scale_https" --names "$work/scale/names.txt" --seconds 5)
    hs_many+=("$(kv handshakes_per_s "$line")")
done
hs_one_median=$(median "${hs_one[@]}") hs_many_median=$(median "${hs_many[@]}")
scale_rss_after=$(mib "$(sum_status VmRSS status "$scale_pid")")
note "handshakes/s, one name: ${hs_one[*]}; random of $sites: ${hs_many[*]}"
kill "$scale_pid" && wait "$scale_pid" || true

# --- the table --------------------------------------------------------------------------------------
m() { median ${results["$1 $2"]:-}; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
row() { # label, metric, format, target note
    local c n
    c=$(m certd "$2") n=$(m nginx "$2")
    printf "| %s | $3 | $3 | %s | %s |\n" "$1" "$c" "$n" "$(ratio "$c" "$n")" "$4"
}
errors_certd=$(awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }' <<<"${results["certd errors"]:-}")
errors_nginx=$(awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }' <<<"${results["nginx errors"]:-}")
table="$work/results.md"
{
    echo "certd $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') vs nginx $(nginx -v 2>&1 | sed 's|.*/||'), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "medians of $rounds interleaved rounds; wrk/websocket runs of ${seconds} s, h2load -n $h2_requests"
    echo
    echo "| measure | certd | nginx | certd/nginx | target |"
    echo "| --- | ---: | ---: | ---: | --- |"
    row "HTTP/1.1 keep-alive req/s (wrk -t2 -c64)" rps "%.0f" "≥ 1.2"
    row "  p50 latency, ms" p50 "%.2f" ""
    row "  p99 latency, ms" p99 "%.2f" "≤ 1.0"
    row "  CPU per request, user, µs" user_us "%.1f" ""
    row "  CPU per request, system, µs" system_us "%.1f" ""
    row "HTTP/2 req/s (h2load -c64 -m10)" h2rps "%.0f" ""
    row "new TLS connection per request, /s (wrk Connection: close)" handshakes "%.0f" "≥ 1.0"
    row "websocket echo messages/s (64 connections)" ws "%.0f" ""
    row "RSS idle, MiB (nginx: master + workers)" rss_idle "%.1f" "certd ≤ 16 MiB"
    row "  PSS idle, MiB" pss_idle "%.1f" ""
    row "RSS after the load runs, MiB" rss_after "%.1f" ""
    row "RSS with $hold open TLS connections, MiB" rss_hold "%.1f" ""
    row "  PSS with $hold open TLS connections, MiB" pss_hold "%.1f" "≤ 1.0"
    row "RSS with $hold open websocket tunnels, MiB" rss_wshold "%.1f" ""
    row "  PSS with $hold open websocket tunnels, MiB" pss_wshold "%.1f" "≤ 1.0"
    row "RSS a minute after the last load, MiB" rss_minute "%.1f" "≤ 1.1"
    row "  PSS a minute after the last load, MiB" pss_minute "%.1f" ""
    printf '| errors (non-2xx, socket, h2 failed, websocket, held, tunnels held) in all runs | %s | %s | | 0 |\n' "$errors_certd" "$errors_nginx"
    echo
    echo "| certd only | result | target |"
    echo "| --- | --- | --- |"
    echo "| hot swap: \`certd issue --force\` through the daemon under wrk load | $swapped/$swaps swaps in $swap_seconds s, $swap_ok requests, $swap_errors errors, new handshakes get the newest: $swap_current | 0 errors |"
    echo "| $sites sites: first name served after start | ${scale_first} ms | |"
    echo "| $sites sites: last name served after start | ${scale_last} ms | ≤ 1000 ms |"
    echo "| $sites sites: names answering with their own certificate | $scale_ok/$sites | all |"
    echo "| $sites sites: RSS after start / after a handshake with every name | $scale_rss / $scale_rss_after MiB | |"
    echo "| full handshakes/s, one name vs a random one of $sites (bench_tls) | ${hs_one_median%.*} vs ${hs_many_median%.*} ($(ratio "$hs_many_median" "$hs_one_median")) | ≈ 1 |"
    issue_c=$(median "${issue_certd[@]}") issue_k=$(median "${issue_caddy[@]}") issue_e=$(median "${issue_caddy_each[@]}")
    issue_k_per=$(awk -v t="$issue_k" -v n="${#issue_names[@]}" 'BEGIN { printf "%.0f", t / n }')
    echo
    echo "| issuance from the same Pebble, medians of $issue_rounds rounds | certd | Caddy $(caddy version 2>/dev/null | awk '{ print $1 }') | certd/Caddy | target |"
    echo "| --- | ---: | ---: | ---: | --- |"
    echo "| wall time from start until every certificate is on disk, ms (certd: one for ${#issue_names[@]} names; Caddy: one per name) | $issue_c | $issue_k | $(ratio "$issue_c" "$issue_k") | |"
    echo "| per certificate, ms (Caddy: its wall time / ${#issue_names[@]}) | $issue_c | $issue_k_per | $(ratio "$issue_c" "$issue_k_per") | ≤ 0.8 |"
    echo "|   Caddy's own time per certificate (its log: obtaining → obtained), ms | | $issue_e | | |"
} >"$table"
echo
cat "$table"
if [ -n "${BENCH_RESULTS:-}" ]; then cp "$table" "$BENCH_RESULTS"; fi
