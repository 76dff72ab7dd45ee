#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests.
#
#   out=$(bash scripts/pg.sh start) && eval "$out"   # fails when the server cannot start
#   bash scripts/pg.sh stop "$CREDITGATE_PG_DIR"
#   bash scripts/pg.sh restart "$CREDITGATE_PG_DIR" [SECONDS_DOWN]   # fast shutdown, start again
#
# `start` installs PostgreSQL from Debian packages when no server binaries are
# found (postgresql-15, else the distribution's `postgresql`), then runs
# initdb and the server as a non-root user (when run as root: the `postgres`
# system user, else a dedicated `creditgate-pg` user), on 127.0.0.1 with a
# free port, with its own data directory under a fresh temporary directory,
# password authentication (scram-sha-256) and TLS (a test CA and a server
# certificate for localhost/127.0.0.1, when openssl is present). It prints
# shell `export` lines:
#   CREDITGATE_PG_DIR             the temporary directory (pass it to `stop`)
#   CREDITGATE_TEST_POSTGRES_URL  postgresql://creditgate:<password>@127.0.0.1:<port>/postgres?sslmode=disable
#                                 (a superuser)
#   CREDITGATE_TEST_POSTGRES_CA   the test CA certificate (PEM), when TLS is on
#   CREDITGATE_TEST_POSTGRES_TLS_URL  postgresql://creditgate_tls:<password>@localhost:<port>/postgres,
#                                 a superuser that pg_hba.conf admits only over TLS (when TLS is on)
# The server runs with fsync, synchronous_commit and full_page_writes off (fast,
# disposable) unless CREDITGATE_PG_DURABLE=1 (PostgreSQL's durable defaults,
# for the benchmark runs of BENCHMARKS.md).
# Everything else goes to stderr. `stop` stops the server and deletes the directory.
# `restart` stops the server with a fast shutdown (open sessions are
# terminated, as in a crash of the database host's service) and starts it
# again with the options of the last start (same port), as the same user,
# after SECONDS_DOWN seconds (default 0); for tests/pg_restart.rs.
set -euo pipefail

log() { echo "pg.sh: $*" >&2; }

find_bindir() {
    local d
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

install_server() {
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL server binaries not found and not root: cannot install them"
        return 1
    fi
    log "installing PostgreSQL from Debian packages"
    # Only the binaries are needed: no default cluster, no service start.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    # Never ask (no terminal in CI): keep our createcluster.conf.
    export DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1
    local keep=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    apt-get update -qq >&2
    apt-get install -y -qq "${keep[@]}" postgresql-15 >&2 || apt-get install -y -qq "${keep[@]}" postgresql >&2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

# Runs a command as the server's user.
as_user() {
    if [ "$RUN_AS" = "" ]; then
        "$@"
    else
        runuser -u "$RUN_AS" -- "$@"
    fi
}

start() {
    local bindir
    if ! bindir=$(find_bindir); then
        install_server
        bindir=$(find_bindir) || { log "PostgreSQL server binaries still not found after installing"; return 1; }
    fi
    RUN_AS=""
    if [ "$(id -u)" = 0 ]; then
        if id postgres >/dev/null 2>&1; then
            RUN_AS=postgres
        else
            id creditgate-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin creditgate-pg
            RUN_AS=creditgate-pg
        fi
    fi
    local dir port password
    dir=$(mktemp -d "${TMPDIR:-/tmp}/creditgate-pg.XXXXXX")
    chmod 0755 "$dir"
    [ -n "$RUN_AS" ] && chown "$RUN_AS" "$dir"
    echo "$RUN_AS" >"$dir/run_as"
    echo "$bindir" >"$dir/bindir"
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    as_user sh -c "umask 077; printf '%s\n' '$password' >'$dir/pwfile'"
    log "initdb ($("$bindir/postgres" --version)) in $dir/data as ${RUN_AS:-$(id -un)}"
    if ! as_user "$bindir/initdb" -D "$dir/data" -U creditgate --pwfile="$dir/pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        log "initdb failed"
        return 1
    fi
    rm -f "$dir/pwfile"
    local ssl_opts="" ca=""
    if command -v openssl >/dev/null; then
        (
            cd "$dir"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
                -subj "/CN=creditgate test CA" -keyout ca.key -out ca.crt \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
                -keyout server.key -out server.csr
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
                -extfile server.ext -out server.crt
        ) >"$dir/openssl.log" 2>&1 && {
            chmod 0600 "$dir/server.key"
            [ -n "$RUN_AS" ] && chown "$RUN_AS" "$dir/server.key" "$dir/server.crt"
            ssl_opts="-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
            ca="$dir/ca.crt"
            # creditgate_tls may connect only over TLS: proves the client encrypts.
            as_user sh -c "{ printf 'hostnossl all creditgate_tls all reject\nhostssl all creditgate_tls all scram-sha-256\n'; cat '$dir/data/pg_hba.conf'; } >'$dir/data/pg_hba.new' && mv '$dir/data/pg_hba.new' '$dir/data/pg_hba.conf'"
        } || log "openssl failed: running without TLS ($(tail -1 "$dir/openssl.log"))"
    fi
    # Fast and disposable: nothing here must survive a crash. CREDITGATE_PG_DURABLE=1
    # keeps PostgreSQL's durable defaults (fsync, synchronous_commit, full page
    # writes) instead: the benchmark runs of BENCHMARKS.md.
    local speed="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${CREDITGATE_PG_DURABLE:-}" = 1 ]; then
        speed=""
    fi
    local tries=0
    while :; do
        port=$(free_port)
        if as_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
            "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300 \
             $speed -c shared_buffers=128MB -c max_locks_per_transaction=256 $ssl_opts" >&2; then
            break
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 3 ]; then
            cat "$dir/server.log" >&2 || true
            log "the PostgreSQL server did not start"
            return 1
        fi
        log "start failed on port $port; trying another port"
    done
    echo "$port" >"$dir/port"
    if [ -n "$ca" ]; then
        PGPASSWORD=$password psql -q -h 127.0.0.1 -p "$port" -U creditgate -d postgres -v ON_ERROR_STOP=1 \
            -c "CREATE ROLE creditgate_tls LOGIN SUPERUSER PASSWORD '$password'" >&2
    fi
    log "PostgreSQL listening on 127.0.0.1:$port (data in $dir/data, log in $dir/server.log)"
    echo "export CREDITGATE_PG_DIR='$dir'"
    # Plain TCP for the bulk of the suite (TLS triples each round trip here);
    # TLS is tested on its own with the TLS-only role below.
    echo "export CREDITGATE_TEST_POSTGRES_URL='postgresql://creditgate:$password@127.0.0.1:$port/postgres?sslmode=disable'"
    if [ -n "$ca" ]; then
        echo "export CREDITGATE_TEST_POSTGRES_CA='$ca'"
        echo "export CREDITGATE_TEST_POSTGRES_TLS_URL='postgresql://creditgate_tls:$password@localhost:$port/postgres'"
    fi
    return 0
}

stop() {
    local dir=${1:?usage: pg.sh stop DIR}
    [ -d "$dir" ] || return 0
    RUN_AS=$(cat "$dir/run_as" 2>/dev/null || true)
    local bindir
    bindir=$(cat "$dir/bindir" 2>/dev/null || find_bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >&2 || log "pg_ctl stop failed"
    fi
    rm -rf "$dir"
}

restart() {
    local dir=${1:?usage: pg.sh restart DIR}
    if [ ! -f "$dir/data/postmaster.pid" ]; then
        log "no server running in $dir"
        return 1
    fi
    RUN_AS=$(cat "$dir/run_as" 2>/dev/null || true)
    local bindir
    bindir=$(cat "$dir/bindir" 2>/dev/null || find_bindir)
    local down=${2:-0}
    if [ "$down" = 0 ]; then
        # pg_ctl restart reuses the command line of the last start (postmaster.opts).
        as_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >&2
    else
        # Down for a while: stop, wait, start with the last start's (quoted) options.
        local opts
        opts=$(cut -d' ' -f2- "$dir/data/postmaster.opts")
        as_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
        sleep "$down"
        as_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "$opts" >&2
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    restart) restart "${2:-}" "${3:-0}" ;;
    *)
        echo "usage: $0 start | stop DIR | restart DIR [SECONDS_DOWN]" >&2
        exit 2
        ;;
esac
