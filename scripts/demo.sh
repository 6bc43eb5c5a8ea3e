#!/usr/bin/env bash
# Shows `certd issue` working end to end against a local Pebble (an ACME test CA), on loopback only.
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
# chains are verified with `openssl verify` against the root Pebble generated, and everything started
# here is stopped on exit.
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

# A loopback TCP port nobody is listening on (outside the ephemeral range).
used_ports=" "
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 10000))
        case "$used_ports" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Waits (at most 20 s) until 127.0.0.1:$1 accepts connections.
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 20 s" >&2
    return 1
}

acme_port=$(free_port) mgmt_port=$(free_port) http_port=$(free_port) tls_port=$(free_port)
dns_port=$(free_port) challtestsrv_port=$(free_port)

# --- Pebble's own HTTPS certificate -----------------------------------------------------------------
step "making a throwaway CA and a certificate for Pebble's HTTPS (openssl)"
mkdir -p "$demo/pki"
(
    cd "$demo/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=certd demo CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout key.pem -out leaf.csr 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
        "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out cert.pem 2>/dev/null
)

# --- challtestsrv and Pebble ------------------------------------------------------------------------
step "starting pebble-challtestsrv (DNS on 127.0.0.1:$dns_port) and pebble (ACME on 127.0.0.1:$acme_port)"
pebble-challtestsrv -dns01 "127.0.0.1:$dns_port" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$challtestsrv_port" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    >"$demo/challtestsrv.log" 2>&1 </dev/null &
pids+=($!)
wait_port "$challtestsrv_port"

cat >"$demo/pebble.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$acme_port",
    "managementListenAddress": "127.0.0.1:$mgmt_port",
    "certificate": "$demo/pki/cert.pem",
    "privateKey": "$demo/pki/key.pem",
    "httpPort": $http_port,
    "tlsPort": $tls_port,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
# Real validation: Pebble connects to <name>:$http_port (resolved to 127.0.0.1), where certd listens.
env -u PEBBLE_VA_ALWAYS_VALID PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config "$demo/pebble.json" -dnsserver "127.0.0.1:$dns_port" \
    >"$demo/pebble.log" 2>&1 </dev/null &
pids+=($!)
wait_port "$acme_port"
wait_port "$mgmt_port"

# --- certd ------------------------------------------------------------------------------------------
cat >"$demo/certd.toml" <<TOML
# certd demo: two sites, ordered from the local Pebble.
state_dir = "state"

[acme]
directory = "https://127.0.0.1:$acme_port/dir"
email = "ops@example.com"
agree_tos = true
ca_roots = "$demo/pki/ca.pem"   # trust Pebble's own HTTPS certificate
key_type = "ecdsa-p256"

[http]
listen = ["127.0.0.1:$http_port"]   # Pebble's httpPort: where it looks for the HTTP-01 answers

[[site]]
names = ["example.test", "www.example.test"]

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
curl -sS --fail --cacert "$demo/pki/ca.pem" "https://127.0.0.1:$mgmt_port/roots/0" -o "$demo/pebble-root.pem"
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

step "done: certd obtained, stored and verified certificates for both sites"
