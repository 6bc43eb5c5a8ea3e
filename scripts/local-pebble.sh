# A local Pebble (Let's Encrypt's ACME test server) on loopback, for scripts/demo.sh and bench/run.sh.
# Sourced, not run. The sourcing script provides a `pids` array (everything started here is appended
# to it, for the script's own cleanup) and has pebble, pebble-challtestsrv and openssl installed.
#
#   pick_port NAME        sets $NAME to a loopback port nobody listens on (never the same one twice)
#   wait_port PORT        waits, at most 20 s, until 127.0.0.1:PORT accepts connections
#   start_pebble DIR CN   makes DIR/pki (a throwaway CA named CN and a certificate for Pebble's own
#                         HTTPS), starts pebble-challtestsrv (DNS answering 127.0.0.1 for every name)
#                         and Pebble, logging to DIR/*.log, and sets:
#                           acme_port    Pebble's ACME directory is https://127.0.0.1:$acme_port/dir
#                           http_port    where Pebble validates HTTP-01: certd's [http].listen port
#                           dns_port     challtestsrv's DNS, for certd's [preflight] resolver
#                           mgmt_port    Pebble's management API (https://127.0.0.1:$mgmt_port/roots/0)
#                           pebble_ca    the CA file that Pebble's HTTPS certificate chains to
#
# Validation is real: Pebble connects to <name>:$http_port, resolved by challtestsrv to 127.0.0.1.

used_ports=" "
pick_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 10000))
        case "$used_ports" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            printf -v "$1" '%s' "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 20 s" >&2
    return 1
}

start_pebble() {
    local dir="$1" cn="$2" tls_port challtestsrv_port
    pick_port acme_port
    pick_port http_port
    pick_port dns_port
    pick_port mgmt_port
    pick_port tls_port
    pick_port challtestsrv_port
    mkdir -p "$dir/pki"
    (
        cd "$dir/pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=$cn" -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout key.pem -out leaf.csr 2>/dev/null
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" >leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile leaf.ext -out cert.pem 2>/dev/null
    )
    pebble_ca="$dir/pki/ca.pem"

    pebble-challtestsrv -dns01 "127.0.0.1:$dns_port" -http01 "" -https01 "" -tlsalpn01 "" \
        -management "127.0.0.1:$challtestsrv_port" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        >"$dir/challtestsrv.log" 2>&1 </dev/null &
    pids+=($!)
    wait_port "$challtestsrv_port"

    cat >"$dir/pebble.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$acme_port",
    "managementListenAddress": "127.0.0.1:$mgmt_port",
    "certificate": "$dir/pki/cert.pem",
    "privateKey": "$dir/pki/key.pem",
    "httpPort": $http_port,
    "tlsPort": $tls_port,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
    env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        pebble -config "$dir/pebble.json" -dnsserver "127.0.0.1:$dns_port" \
        >"$dir/pebble.log" 2>&1 </dev/null &
    pids+=($!)
    wait_port "$acme_port"
    wait_port "$mgmt_port"
}
