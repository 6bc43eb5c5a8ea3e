#!/usr/bin/env bash
# Shows certd working end to end against a local Pebble (an ACME test CA), on loopback only: first
# `certd issue`, then the daemon, `certd run`, serving the sites over HTTPS.
#
#   bash scripts/demo.sh            # debug build
#   CERTD_RELEASE=1 bash scripts/demo.sh
#   CERTD_DEMO_KEEP=1 bash scripts/demo.sh   # keep the demo folder (config, state, logs) afterwards
#
# On a fresh Debian machine it installs what is missing (pebble, openssl, curl, a C compiler; Rust must
# be installed or installable with apt), builds certd, makes a TLS certificate for Pebble's own HTTPS
# with openssl, starts pebble-challtestsrv (Pebble's DNS, answering 127.0.0.1 for every name) and
# Pebble, and then runs certd: check, issue (two sites), status, issue again (nothing due, skipped).
# Pebble really validates each HTTP-01 challenge by connecting to certd's own listener. The issued
# chains are verified with `openssl verify` against the root Pebble generated.
#
# Then it starts `certd run` in the background (log in certd-run.log) and checks, with curl and openssl
# against Pebble's root, that the daemon does the main job: the first site's static files over HTTP/2
# and HTTP/1.1, a Range request (206), the :80 redirect to https (301 with path and query kept), `/api/`
# reverse-proxied to a `python3 -m http.server` upstream (skipped when python3 is missing), `certd issue
# --force` handed to the daemon over its control socket with new TLS handshakes serving the new serial
# at once, `certd status` while it runs, an unknown name refused at the TLS handshake, and SIGTERM
# ending the daemon with exit 0 (then its access-log lines). Any check that does not hold fails the
# script. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- prerequisites ----------------------------------------------------------------------------------
missing=()
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v cc >/dev/null || missing+=(build-essential)
command -v cargo >/dev/null || missing+=(cargo rustc)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "building certd"
if [ -n "${CERTD_RELEASE:-}" ]; then
    cargo build --locked --release --bin certd
    certd="$repo/target/release/certd"
else
    cargo build --locked --bin certd
    certd="$repo/target/debug/certd"
fi

# --- a scratch folder and cleanup -------------------------------------------------------------------
demo="$(mktemp -d /tmp/certd-demo.XXXXXX)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        echo "demo failed (exit $status); logs:" >&2
        for log in "$demo"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }; done
    fi
    if [ -n "${CERTD_DEMO_KEEP:-}" ]; then
        echo "kept $demo"
    else
        rm -rf "$demo"
    fi
}
trap cleanup EXIT

# shellcheck source=scripts/local-pebble.sh
. "$repo/scripts/local-pebble.sh"
pick_port https_port
pick_port api_port

fail() { echo "FAILED: $*" >&2; exit 1; }
ok() { printf '\033[32mok\033[0m: %s\n' "$*"; }

# --- Pebble -----------------------------------------------------------------------------------------
step "starting Pebble: its own HTTPS certificate (openssl), pebble-challtestsrv as its DNS, pebble"
start_pebble "$demo" "certd demo CA"
echo "ACME directory https://127.0.0.1:$acme_port/dir, HTTP-01 validated on :$http_port, DNS on :$dns_port"

# --- what `certd run` will serve: static files, and (with python3) an upstream for /api/ -------------
mkdir -p "$demo/www"
echo "Hello from certd, over HTTPS." >"$demo/www/index.html"
head -c 102400 /dev/urandom >"$demo/www/big.bin"   # 100 KiB, for the Range request
api_route=""
if command -v python3 >/dev/null; then
    step "starting the /api/ upstream: python3 -m http.server on 127.0.0.1:$api_port"
    # A proxy route forwards the path unchanged, so /api/hello.txt is upstream/api/hello.txt.
    mkdir -p "$demo/upstream/api"
    echo "Hello from the python3 upstream, through certd's reverse proxy." >"$demo/upstream/api/hello.txt"
    python3 -m http.server "$api_port" --bind 127.0.0.1 --directory "$demo/upstream" \
        >"$demo/upstream.log" 2>&1 </dev/null &
    pids+=($!)
    wait_port "$api_port"
    api_route="
  [[site.route]]
  path = \"/api/\"
  proxy = \"http://127.0.0.1:$api_port\"   # python3 -m http.server
"
else
    step "python3 is missing: the /api/ reverse-proxy part is skipped"
fi

# --- certd ------------------------------------------------------------------------------------------
cat >"$demo/certd.toml" <<TOML
# certd demo: two sites, ordered from the local Pebble, then served by \`certd run\`.
state_dir = "state"

[acme]
directory = "https://127.0.0.1:$acme_port/dir"
email = "ops@example.com"
agree_tos = true
ca_roots = "$pebble_ca"   # trust Pebble's own HTTPS certificate
key_type = "ecdsa-p256"

[http]
listen = ["127.0.0.1:$http_port"]   # Pebble's httpPort: where it looks for the HTTP-01 answers

[https]                             # \`certd run\` only
listen = ["127.0.0.1:$https_port"]

[preflight]                         # before the first order: DNS and a self-test request
resolver = "127.0.0.1:$dns_port"    # challtestsrv, the DNS Pebble uses too

[limits]
grace_period = "2s"                 # on SIGTERM, time for requests to finish

[[site]]
names = ["example.test", "www.example.test"]

  [[site.route]]
  path = "/"
  root = "www"                      # nginx root: /big.bin -> www/big.bin
$api_route
[[site]]
names = ["app.example.test"]
TOML
step "certd.toml"
cat "$demo/certd.toml"

export CERTD_LOG="${CERTD_LOG:-info}"
run() { echo "\$ certd $*"; "$certd" "$@"; }

step "certd check"
run check --config "$demo/certd.toml"
step "certd issue"
run issue --config "$demo/certd.toml"
step "certd status"
run status --config "$demo/certd.toml"
step "certd issue (again: nothing is due, so both sites are skipped)"
run issue --config "$demo/certd.toml"

# --- verify the issued chains against Pebble's root -------------------------------------------------
step "verifying the chains with openssl against Pebble's root (from its management API)"
curl -sS --fail --cacert "$pebble_ca" "https://127.0.0.1:$mgmt_port/roots/0" -o "$demo/pebble-root.pem"
for site in example.test:www.example.test app.example.test; do
    dir="$demo/state/certs/${site%%:*}"
    for name in ${site//:/ }; do
        echo "\$ openssl verify -CAfile pebble-root.pem -untrusted chain.pem -verify_hostname $name cert.pem"
        openssl verify -CAfile "$demo/pebble-root.pem" -untrusted "$dir/chain.pem" \
            -verify_hostname "$name" "$dir/cert.pem"
    done
    openssl x509 -in "$dir/cert.pem" -noout -subject -issuer -enddate -ext subjectAltName
done

step "the state directory"
(
    cd "$demo"
    find state | sort | while read -r path; do
        if [ -L "$path" ]; then
            printf '%s  %s -> %s\n' "$(stat -c '%A' "$path")" "$path" "$(readlink "$path")"
        else
            printf '%s  %s\n' "$(stat -c '%A' "$path")" "$path"
        fi
    done
)

# --- the daemon: certd run --------------------------------------------------------------------------
step "starting certd run in the background (log: certd-run.log), HTTPS on 127.0.0.1:$https_port"
echo "\$ certd run --config certd.toml &"
"$certd" run --config "$demo/certd.toml" >"$demo/certd-run.log" 2>&1 </dev/null &
daemon_pid=$!
pids+=("$daemon_pid")
wait_port "$https_port"

root="$demo/pebble-root.pem"
# curl against the daemon, trusting only Pebble's root; example.test resolves to 127.0.0.1.
https_curl() { curl -sS --cacert "$root" --resolve "example.test:$https_port:127.0.0.1" "$@"; }
# The serial of the certificate a new TLS handshake for example.test is given.
served_serial() {
    openssl s_client -connect "127.0.0.1:$https_port" -servername example.test </dev/null 2>/dev/null |
        openssl x509 -noout -serial
}

step "1. GET https://example.test:$https_port/ over HTTP/2 and over HTTP/1.1 (static root www/)"
for version in --http2 --http1.1; do
    echo "\$ curl $version --cacert pebble-root.pem --resolve example.test:$https_port:127.0.0.1 https://example.test:$https_port/"
    result=$(https_curl "$version" -o "$demo/body" -w '%{http_code} HTTP/%{http_version}' \
        "https://example.test:$https_port/")
    echo "$result"
    cat "$demo/body"
    want=$([ "$version" = --http2 ] && echo "200 HTTP/2" || echo "200 HTTP/1.1")
    [ "$result" = "$want" ] || fail "expected $want, got $result"
    cmp -s "$demo/body" "$demo/www/index.html" || fail "the body is not www/index.html"
    ok "$want, body is www/index.html"
done

step "2. a Range request on big.bin (100 KiB)"
echo "\$ curl -r 0-99 ... https://example.test:$https_port/big.bin"
result=$(https_curl -r 0-99 -D "$demo/headers" -o "$demo/body" -w '%{http_code} %{size_download}' \
    "https://example.test:$https_port/big.bin")
echo "$result bytes"
grep -i '^content-range:' "$demo/headers" | tr -d '\r'
[ "$result" = "206 100" ] || fail "expected 206 with 100 bytes, got $result"
cmp -s "$demo/body" <(head -c 100 "$demo/www/big.bin") || fail "the range is not the first 100 bytes of big.bin"
ok "206 Partial Content, the first 100 bytes of big.bin"

step "3. plain http on :$http_port redirects to https, keeping path and query"
echo "\$ curl -si --resolve example.test:$http_port:127.0.0.1 'http://example.test:$http_port/hello?x=1'"
response=$(curl -si --resolve "example.test:$http_port:127.0.0.1" "http://example.test:$http_port/hello?x=1" | tr -d '\r')
echo "$response"
head -n 1 <<<"$response" | grep -q '^HTTP/[0-9.]* 301' || fail "expected a 301"
grep -qix "location: https://example.test:$https_port/hello?x=1" <<<"$response" ||
    fail "expected Location: https://example.test:$https_port/hello?x=1"
ok "301 to https://example.test:$https_port/hello?x=1"

step "4. /api/ reverse-proxied to the python3 upstream"
if [ -n "$api_route" ]; then
    echo "\$ curl ... https://example.test:$https_port/api/hello.txt"
    result=$(https_curl -o "$demo/body" -w '%{http_code} HTTP/%{http_version}' \
        "https://example.test:$https_port/api/hello.txt")
    echo "$result"
    cat "$demo/body"
    [ "${result%% *}" = 200 ] || fail "expected 200, got $result"
    cmp -s "$demo/body" "$demo/upstream/api/hello.txt" || fail "the body is not the upstream's file"
    ok "200 from 127.0.0.1:$api_port through certd"
else
    echo "skipped: python3 is missing"
fi

step "5. certd issue --force example.test while the daemon runs (handed over its control socket)"
before=$(served_serial)
echo "served before: $before"
issued=$(run issue --force --config "$demo/certd.toml" example.test)
echo "$issued"
grep -q '^example.test: issued serial' <<<"$issued" || fail "expected 'example.test: issued serial ...'"
after=$(served_serial)
echo "served after:  $after"
stored=$(openssl x509 -in "$demo/state/certs/example.test/cert.pem" -noout -serial)
[ -n "$before" ] && [ "$before" != "$after" ] || fail "new handshakes still get the old certificate"
[ "$after" = "$stored" ] || fail "the served serial is not the stored one ($stored)"
ok "new handshakes are given the new certificate, without a restart"

step "6. certd status while the daemon runs"
run status --config "$demo/certd.toml"

step "7. an unknown name is refused at the TLS handshake"
echo "\$ curl --resolve nope.test:$https_port:127.0.0.1 https://nope.test:$https_port/"
rc=0
curl -sS --cacert "$root" --resolve "nope.test:$https_port:127.0.0.1" "https://nope.test:$https_port/" \
    -o /dev/null 2>"$demo/nope.err" || rc=$?
cat "$demo/nope.err"
[ "$rc" -eq 35 ] || fail "expected curl to fail at the TLS handshake (exit 35), got exit $rc"
ok "refused (curl exit 35: TLS handshake failed), no other site's certificate given out"

step "8. SIGTERM: the daemon stops gracefully"
echo "\$ kill -TERM $daemon_pid"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
remaining=()
for pid in "${pids[@]}"; do [ "$pid" = "$daemon_pid" ] || remaining+=("$pid"); done
pids=("${remaining[@]}")
echo "certd run exited with status $rc"
[ "$rc" -eq 0 ] || fail "expected exit status 0"
ok "exit 0"
echo "its access log (last lines):"
grep 'certd::access' "$demo/certd-run.log" | tail -n 8 || fail "no access-log lines in certd-run.log"

step "done: certd obtained, stored and verified certificates for both sites, and certd run served them"
