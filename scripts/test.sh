#!/usr/bin/env bash
# certd's whole test suite, exactly as CI runs it (.ci/run execs this script).
#
#   bash scripts/test.sh
#
# Installs Pebble (the ACME test CA the end-to-end tests run against) when missing, builds, runs every
# test target, then checks formatting and lints. Exits non-zero if anything fails. Works unattended
# (CI runs it as root with no stdin); elsewhere apt-get goes through sudo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Pebble and the tools the tests drive -----------------------------------------------------------
missing=()
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
# Tools some tests drive; a test whose tool is missing fails (it does not skip). testssl.sh grades
# certd's TLS (reliability::tls_grade), systemd-analyze verifies the unit (deploy), mount makes the
# tmpfs and read-only bind mounts of reliability::disk.
command -v testssl >/dev/null || command -v testssl.sh >/dev/null || missing+=(testssl.sh)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v mount >/dev/null && command -v umount >/dev/null || missing+=(mount)
# htpasswd writes the bcrypt, apr1 and SHA fixtures of the basic-auth tests (run::access).
command -v htpasswd >/dev/null || missing+=(apache2-utils)
# named is the authoritative DNS server (with TSIG updates) of the DNS-01 tests (dns01); dig and
# nsupdate come with bind9-dnsutils and drive it from the harness and the exec-hook test.
{ [ -x /usr/sbin/named ] || command -v named >/dev/null; } || missing+=(bind9)
command -v nsupdate >/dev/null && command -v dig >/dev/null || missing+=(bind9-dnsutils)
# php-fpm runs the PHP of the FastCGI route tests (run::fastcgi).
compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=(php-fpm)
# PostgreSQL is the shared store of the fleet tests (harness::postgres runs its own cluster).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# HAProxy is the TCP balancer (PROXY protocol v2) in front of two fleet nodes (fleet_ops).
command -v haproxy >/dev/null || missing+=(haproxy)
# promtool checks deploy/monitoring's alert rules (monitoring); dpkg-deb builds the Debian package
# that package:: installs (scripts/build-deb.sh), with strip from binutils.
command -v promtool >/dev/null || missing+=(prometheus)
command -v dpkg-deb >/dev/null || missing+=(dpkg-dev)
command -v strip >/dev/null || missing+=(binutils)
# nginx itself answers the corpus configs the differential test compares certd with (differential).
[ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
echo "==> $(command -v pebble) $(dpkg-query -W -f='${Version}' pebble 2>/dev/null || true)"

# --- build and test ---------------------------------------------------------------------------------
echo "==> cargo build --locked --all-targets"
cargo build --locked --all-targets

echo "==> cargo test --locked --all-targets"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
set -e

# --- formatting and lints (after the tests, so a style slip never hides a test result) --------------
lint_status=0
have_component() { # $1: cargo subcommand, $2: rustup component
    cargo "$1" --version >/dev/null 2>&1 && return 0
    if command -v rustup >/dev/null; then
        echo "==> rustup component add $2"
        rustup component add "$2" >/dev/null 2>&1 && cargo "$1" --version >/dev/null 2>&1 && return 0
    fi
    echo "warning: cargo $1 is not available and could not be installed; skipping it" >&2
    return 1
}
if have_component fmt rustfmt; then
    echo "==> cargo fmt --all --check"
    cargo fmt --all --check || lint_status=1
fi
if have_component clippy clippy; then
    echo "==> cargo clippy --locked --all-targets -- -D warnings"
    cargo clippy --locked --all-targets -- -D warnings || lint_status=1
fi

# --- summary ----------------------------------------------------------------------------------------
passed=0 failed=0 ignored=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$log")
[ "$lint_status" -eq 0 ] || echo "fmt/clippy: FAILED (see above)"
echo "tests: $passed passed, $failed failed, $ignored skipped"

if [ "$test_status" -ne 0 ]; then exit "$test_status"; fi
exit "$lint_status"
