#!/usr/bin/env bash
# certd with many sites in PostgreSQL, two nodes: start to serving, memory per site, and how long a
# certificate change takes to reach the other node. Not part of the test suite.
#
#   bash bench/fleet.sh                     # 100,000 sites
#   FLEET_SITES=1000 bash bench/fleet.sh    # a quick run
#
# Knobs: FLEET_SITES (default 100000), FLEET_PROFILE (release; debug to try the script out), FLEET_SWAPS (propagation rounds, default 20), FLEET_THREADS
# (generating/installing threads, default 8), FLEET_BUILD=0 (use the binaries built already), FLEET_TIMEOUT (seconds a node may take to serve
# every name, default 1200), FLEET_PER_SITE (sites read one `current` at a time in step 5,
# default 1000), FLEET_KEEP=1 (keep the scratch folder and its logs),
# FLEET_RESULTS=<file> (also write the results table there).
#
# What it does, all on loopback (see bench/README.md, "Fleet"):
#  1. starts PostgreSQL 15 from /usr/lib/postgresql/15/bin in a temp folder (initdb, then `postgres`
#     in the foreground on a free 127.0.0.1 port, as the postgres user when run as root; fsync off:
#     a throwaway cluster), stopped by pid on exit;
#  2. `bench_fleet gen`: a test CA (rcgen) and FLEET_SITES certificates (sNNNNN.fleet.bench, one name
#     each, ECDSA P-256), made on FLEET_THREADS threads and installed through certd's own
#     PostgresStore::install (sealed, with the change notification), and two node configurations with
#     one [[site]] per name and [storage] backend = "postgres";
#  3. starts node A (`certd run`) and times, with verified TLS handshakes trusting only the test CA
#     (`bench_tls ready`), the first and the last name being served, and (from its log) when every
#     stored pair is in service; then a sample: the first name, 1,000 random others and the last;
#     reads RSS and PSS once every pair is in service and after those handshakes;
#  4. starts node B the same way, then `bench_fleet swap`: FLEET_SWAPS times, a new certificate for
#     one site installed through the store, timed until node B serves exactly that certificate;
#  5. `bench_fleet load`: the store's side of a first start both ways, into fresh local copies:
#     `current` per site (one query and one fsynced local-copy write each, the old start) for
#     FLEET_PER_SITE sites, then `current_batches` for all and `keep_local_copies` after it for
#     the same FLEET_PER_SITE sites.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

sites="${FLEET_SITES:-100000}"
swaps="${FLEET_SWAPS:-20}"
threads="${FLEET_THREADS:-8}"
timeout="${FLEET_TIMEOUT:-1200}"
pg_bin=/usr/lib/postgresql/15/bin

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
kv() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
field() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$3/$2"; } # field, file, pid → KiB
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; } # pid → user+sys s
per_site() { awk -v k="$1" -v n="$sites" 'BEGIN { printf "%.2f", k / n }'; } # KiB → KiB per site

[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL 15 is not installed (apt-get install postgresql-15)" >&2; exit 1; }

profile="${FLEET_PROFILE:-release}" # `debug` only to try the script out: its figures mean nothing
step "building certd and the helpers ($profile)"
# FLEET_BUILD=0: the binaries already in target/<profile> (a commit since they were built would
# otherwise rebuild certd: its build script embeds the commit).
[ "${FLEET_BUILD:-1}" = 0 ] || cargo build --locked $([ "$profile" = release ] && echo --release) \
    --bin certd --example bench_fleet --example bench_tls --example bench_upstream
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile"
certd="$bin/certd"
examples="$bin/examples"

work="$(mktemp -d /tmp/certd-fleet.XXXXXX)"
chmod 755 "$work"
pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        echo "fleet bench failed (exit $status); last log lines:" >&2
        for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }; done
    fi
    if [ -n "${FLEET_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=scripts/local-pebble.sh
. "$repo/scripts/local-pebble.sh" # for pick_port
for port in pg_port up_port a_https a_http b_https b_http; do pick_port "$port"; done

# --- PostgreSQL ------------------------------------------------------------------------------------
step "PostgreSQL on 127.0.0.1:$pg_port"
mkdir "$work/pg"
echo "fleet-bench-password" >"$work/pg/pwfile"
cp "$work/pg/pwfile" "$work/db-password"
chmod 600 "$work/db-password"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres:postgres "$work/pg"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U certd --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$work/pg/pwfile" -E UTF8 --no-sync >"$work/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -c listen_addresses=127.0.0.1 \
    -c "unix_socket_directories=$work/pg" -c fsync=off -c full_page_writes=off \
    >"$work/postgres.log" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 300); do
    "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q && break
    sleep 0.1
done
"$pg_bin/psql" -h "$work/pg" -p "$pg_port" -U certd -d postgres -qc "CREATE DATABASE certd" >/dev/null
url="postgres://certd@127.0.0.1:$pg_port/certd"

"$examples/bench_upstream" "127.0.0.1:$up_port" >"$work/upstream.log" 2>&1 </dev/null &
pids+=($!)

# --- sites ----------------------------------------------------------------------------------------
step "$sites sites: certificates made and installed through PostgresStore ($threads threads)"
gen_line=$(/usr/bin/time -f "gen_user_s=%U gen_sys_s=%S" -o "$work/gen.time" "$examples/bench_fleet" gen --dir "$work/fleet" --sites "$sites" --threads "$threads" \
    --url "$url" --password-file "$work/db-password" \
    --https-a "127.0.0.1:$a_https" --http-a "127.0.0.1:$a_http" \
    --https-b "127.0.0.1:$b_https" --http-b "127.0.0.1:$b_http" \
    --upstream "http://127.0.0.1:$up_port" 2>"$work/gen.log")
gen_line="$gen_line $(cat "$work/gen.time")"
note "$gen_line"
db_size=$("$pg_bin/psql" -h "$work/pg" -p "$pg_port" -U certd -d certd -tAc \
    "SELECT pg_size_pretty(pg_database_size('certd'))")
(head -n 1 "$work/fleet/sample.txt" && tail -n 1 "$work/fleet/sample.txt") >"$work/fleet/ends.txt"
sample_count=$(wc -l <"$work/fleet/sample.txt")

# --- node A: start to serving, memory -------------------------------------------------------------
start_node() { # node, https port → sets node_pid, node_first, node_last, node_loaded, node_cpu, node_rss0, node_pss0
    local node="$1" port="$2" t0 line
    t0=$(date +%s%N)
    (cd "$work/fleet/$node" && exec "$certd" run --config certd.toml) >"$work/certd-$node.log" 2>&1 </dev/null &
    node_pid=$!
    pids+=("$node_pid")
    line=$("$examples/bench_tls" ready --addr "127.0.0.1:$port" --names "$work/fleet/ends.txt" \
        --ca "$work/fleet/ca.pem" --since-ns "$t0" --timeout "$timeout" 2>>"$work/ready-$node.log")
    node_first=$(kv first_ms "$line") node_last=$(kv last_ms "$line")
    # A name asked for before the full load reaches it is loaded on demand, so the last name
    # answering early says little: "serving every name" is the daemon's own line, once every stored
    # pair is in the resolver (polled every 20 ms).
    local deadline=$(($(date +%s) + timeout))
    until grep -q "stored certificates in service" "$work/certd-$node.log"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "node $node: not every name loaded within ${timeout}s" >&2; exit 1; }
        sleep 0.02
    done
    node_loaded=$(ms_since "$t0") node_cpu=$(cpu_s "$node_pid")
    node_rss0=$(field VmRSS status "$node_pid") node_pss0=$(field Pss smaps_rollup "$node_pid")
}
step "node A: certd run on $sites sites, until the first and the last name are served"
start_node a "$a_https"
a_pid=$node_pid a_first=$node_first a_last=$node_last a_loaded=$node_loaded a_cpu=$node_cpu a_rss0=$node_rss0 a_pss0=$node_pss0
note "first ${a_first} ms, last ${a_last} ms, every name ${a_loaded} ms (certd CPU ${a_cpu} s), RSS $(mib "$a_rss0") MiB"
step "node A: $sample_count sampled names, each must answer with its own certificate"
line=$("$examples/bench_tls" ready --addr "127.0.0.1:$a_https" --names "$work/fleet/sample.txt" \
    --ca "$work/fleet/ca.pem" --since-ns "$(date +%s%N)" --timeout 60 2>>"$work/ready-a.log")
a_ok=$(kv names_ok "$line") a_sweep=$(kv sweep_s "$line")
a_rss1=$(field VmRSS status "$a_pid") a_pss1=$(field Pss smaps_rollup "$a_pid")
note "$line"

# --- node B and propagation ------------------------------------------------------------------------
step "node B: certd run on the same database"
start_node b "$b_https"
b_pid=$node_pid b_first=$node_first b_last=$node_last b_loaded=$node_loaded b_cpu=$node_cpu
note "first ${b_first} ms, last ${b_last} ms"
swap_site=$(sed -n "$(((sites + 1) / 2))p" "$work/fleet/names.txt")
step "propagation: $swaps new certificates for $swap_site installed via the store, until node B serves each"
swap_line=$("$examples/bench_fleet" swap --dir "$work/fleet" --url "$url" \
    --password-file "$work/db-password" --site "$swap_site" --addr "127.0.0.1:$b_https" \
    --rounds "$swaps" 2>"$work/swap.log")
note "$swap_line"
b_rss=$(field VmRSS status "$b_pid")
per_site="${FLEET_PER_SITE:-1000}"
step "the store's side of a first start: current() per site ($per_site) vs current_batches ($sites)"
load_line=$("$examples/bench_fleet" load --dir "$work/fleet" --url "$url" \
    --password-file "$work/db-password" --sites "$sites" --per-site "$per_site" 2>"$work/load.log")
note "$load_line"

# --- results ---------------------------------------------------------------------------------------
# Node A's background pass over its local copy (logged when done; it may still run at 100,000).
a_copy=$(sed -n 's/.*pairs written to the local copy.*written=\([0-9]*\).*seconds=\([0-9.]*\).*/\1 pairs in \2 s/p' \
    "$work/certd-a.log" | tail -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
table() {
    echo "certd $commit ($profile build) fleet bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $sites sites, PostgreSQL 15 (fsync off)"
    echo "machine: $(nproc) cores, $cpu, $mem RAM, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| measure | value |"
    echo "| --- | --- |"
    echo "| generate + install $sites certificates ($threads threads) | $(kv gen_s "$gen_line") s (CPU user $(kv gen_user_s "$gen_line") s + sys $(kv gen_sys_s "$gen_line") s; thread-seconds: making $(kv make_cpu_s "$gen_line") s, PostgresStore::install $(kv install_thread_s "$gen_line") s) |"
    echo "| database size | $db_size |"
    echo "| node A: start → first name served | $a_first ms |"
    echo "| node A: start → last name served (loaded on demand if asked before the full load) | $a_last ms |"
    echo "| node A: start → every stored pair in service (\"stored certificates in service\") | $a_loaded ms (certd CPU user+sys by then: $a_cpu s) |"
    echo "| node A: sampled names with their own certificate (first, 1,000 random, last) | $a_ok/$sample_count (sweep $a_sweep s) |"
    echo "| node A: RSS / PSS once every pair is in service | $(mib "$a_rss0") / $(mib "$a_pss0") MiB ($(per_site "$a_rss0") KiB RSS per site) |"
    echo "| node A: RSS / PSS after the sampled handshakes | $(mib "$a_rss1") / $(mib "$a_pss1") MiB ($(per_site "$a_rss1") KiB per site) |"
    echo "| node A: local copy written in the background after serving | ${a_copy:-not finished when the bench ended} |"
    echo "| node B (A running): start → first / last name / every name served | $b_first / $b_last / $b_loaded ms (CPU $b_cpu s, RSS $(mib "$b_rss") MiB) |"
    echo "| install on the store → node B serves it ($swaps rounds) | median $(kv median_ms "$swap_line") ms, max $(kv max_ms "$swap_line") ms, min $(kv min_ms "$swap_line") ms |"
    echo "| store, old start path: \`current\` per site with its local-copy write ($(kv per_site_n "$load_line") sites) | $(kv per_site_s "$load_line") s ($(kv per_site_ms_each "$load_line") ms per site) |"
    echo "| store, new start path: \`current_batches\` ($sites sites, batches of 500) | $(kv batched_s "$load_line") s |"
    echo "| store: \`keep_local_copies\` afterwards, in the background ($(kv copy_written "$load_line") pairs) | $(kv copy_s "$load_line") s ($(kv copy_ms_each "$load_line") ms per pair) |"
}
table | tee "${FLEET_RESULTS:-/dev/null}"
