# shellcheck shell=bash
# PostgreSQL and Redis for tests and local runs. Source it (`source scripts/services.sh`) and call
# `caduceus_services_up`; it exports DATABASE_URL and REDIS_URL:
#
#   1. the given DATABASE_URL / REDIS_URL when it answers;
#   2. else the local default (postgres://postgres@127.0.0.1:5432/postgres, redis://127.0.0.1:6379/0)
#      when that answers;
#   3. else a throw-away instance started here: initdb into .tmp/ + pg_ctl on a free port with
#      trust auth; redis-server on a free port with --save ''.
#
# CADUCEUS_SERVICES_NO_DEFAULTS=1 skips step 2 (to exercise step 3 on a machine that has both).
# `caduceus_services_down` stops only what step 3 started (scripts/test.sh calls it on exit).
# Run directly (`scripts/services.sh up` / `scripts/services.sh down`) it prints export lines and
# leaves the instances running until `down`.

_CADUCEUS_SVC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_CADUCEUS_SVC_STATE="$_CADUCEUS_SVC_ROOT/.tmp/services"

_svc_log() { printf 'services: %s\n' "$*" >&2; }

_svc_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

_svc_pg_bindir() {
    local d
    for d in "$_CADUCEUS_SVC_ROOT/.tools/bin" /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            printf '%s' "$d"
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
    return 1
}

# True when the URL accepts a real query (not just a TCP connect).
_svc_pg_answers() {
    [ -n "${1:-}" ] || return 1
    PGCONNECT_TIMEOUT=3 psql "$1" -XtAq -c 'select 1' >/dev/null 2>&1
}

_svc_redis_answers() {
    [ -n "${1:-}" ] || return 1
    [ "$(timeout 5 redis-cli -u "$1" ping 2>/dev/null)" = "PONG" ]
}

# Runs a command as an unprivileged user when we are root (initdb and postgres refuse root).
_svc_as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        local user=postgres
        id "$user" >/dev/null 2>&1 || user=nobody
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

_svc_start_postgres() {
    local bindir port dir user
    bindir="$(_svc_pg_bindir)" || { _svc_log "ERROR: no initdb/pg_ctl found (run scripts/tools.sh)"; return 1; }
    port="$(_svc_free_port)" || return 1
    mkdir -p "$_CADUCEUS_SVC_STATE"
    dir="$(mktemp -d "$_CADUCEUS_SVC_STATE/pg.XXXXXX")"
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        id "$user" >/dev/null 2>&1 || user=nobody
        # The unprivileged user must be able to reach the directory.
        chmod o+x "$_CADUCEUS_SVC_ROOT/.tmp" "$_CADUCEUS_SVC_STATE" 2>/dev/null || true
        chown "$user" "$dir"
        chmod 0700 "$dir"
        if ! runuser -u "$user" -- test -w "$dir"; then
            # A checkout under a private home directory: use /tmp instead.
            rm -rf "$dir"
            dir="$(mktemp -d /tmp/caduceus-pg.XXXXXX)"
            chown "$user" "$dir"
            chmod 0700 "$dir"
        fi
    fi
    _svc_log "starting throw-away PostgreSQL ($("$bindir/pg_ctl" --version | awk '{print $3}')) on 127.0.0.1:$port in $dir"
    if ! _svc_as_pg_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
        _svc_log "ERROR: initdb failed:"; tail -n 20 "$dir/initdb.log" >&2
        return 1
    fi
    if ! _svc_as_pg_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null; then
        _svc_log "ERROR: PostgreSQL did not start:"; tail -n 20 "$dir/postgres.log" >&2
        return 1
    fi
    printf '%s\n' "$dir" >>"$_CADUCEUS_SVC_STATE/started-postgres"
    CADUCEUS_STARTED_PG_DIRS="${CADUCEUS_STARTED_PG_DIRS:+$CADUCEUS_STARTED_PG_DIRS }$dir"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

_svc_start_redis() {
    local port dir
    command -v redis-server >/dev/null 2>&1 || { _svc_log "ERROR: redis-server not found (run scripts/tools.sh)"; return 1; }
    port="$(_svc_free_port)" || return 1
    mkdir -p "$_CADUCEUS_SVC_STATE"
    dir="$(mktemp -d "$_CADUCEUS_SVC_STATE/redis.XXXXXX")"
    _svc_log "starting throw-away Redis on 127.0.0.1:$port"
    if ! redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null; then
        _svc_log "ERROR: redis-server did not start"
        return 1
    fi
    for _ in $(seq 1 50); do
        _svc_redis_answers "redis://127.0.0.1:$port/0" && break
        sleep 0.1
    done
    _svc_redis_answers "redis://127.0.0.1:$port/0" || { _svc_log "ERROR: Redis did not answer:"; tail -n 20 "$dir/redis.log" >&2; return 1; }
    printf '%s\n' "$dir" >>"$_CADUCEUS_SVC_STATE/started-redis"
    CADUCEUS_STARTED_REDIS_DIRS="${CADUCEUS_STARTED_REDIS_DIRS:+$CADUCEUS_STARTED_REDIS_DIRS }$dir"
    export REDIS_URL="redis://127.0.0.1:$port/0"
}

caduceus_services_up() {
    local default_pg="postgres://postgres@127.0.0.1:5432/postgres"
    local default_redis="redis://127.0.0.1:6379/0"
    if _svc_pg_answers "${DATABASE_URL:-}"; then
        _svc_log "PostgreSQL: using DATABASE_URL"
    elif [ "${CADUCEUS_SERVICES_NO_DEFAULTS:-0}" != 1 ] && _svc_pg_answers "$default_pg"; then
        [ -n "${DATABASE_URL:-}" ] && _svc_log "DATABASE_URL does not answer; using the local default"
        export DATABASE_URL="$default_pg"
        _svc_log "PostgreSQL: using the server already listening at $default_pg, not a throw-away one (CADUCEUS_SERVICES_NO_DEFAULTS=1 starts one)"
    else
        [ -n "${DATABASE_URL:-}" ] && _svc_log "DATABASE_URL does not answer (nor does the local default, or it is disabled)"
        _svc_start_postgres || return 1
    fi
    if _svc_redis_answers "${REDIS_URL:-}"; then
        _svc_log "Redis: using REDIS_URL"
    elif [ "${CADUCEUS_SERVICES_NO_DEFAULTS:-0}" != 1 ] && _svc_redis_answers "$default_redis"; then
        [ -n "${REDIS_URL:-}" ] && _svc_log "REDIS_URL does not answer; using the local default"
        export REDIS_URL="$default_redis"
        _svc_log "Redis: using the server already listening at $default_redis, not a throw-away one (CADUCEUS_SERVICES_NO_DEFAULTS=1 starts one)"
    else
        [ -n "${REDIS_URL:-}" ] && _svc_log "REDIS_URL does not answer (nor does the local default, or it is disabled)"
        _svc_start_redis || return 1
    fi
}

# Stops the instances this shell started (or, with `all`, every instance recorded in .tmp/services).
caduceus_services_down() {
    local pg_dirs="${CADUCEUS_STARTED_PG_DIRS:-}" redis_dirs="${CADUCEUS_STARTED_REDIS_DIRS:-}" dir bindir
    if [ "${1:-}" = all ]; then
        pg_dirs="$(cat "$_CADUCEUS_SVC_STATE/started-postgres" 2>/dev/null || true)"
        redis_dirs="$(cat "$_CADUCEUS_SVC_STATE/started-redis" 2>/dev/null || true)"
    fi
    bindir="$(_svc_pg_bindir 2>/dev/null || true)"
    for dir in $pg_dirs; do
        if [ -f "$dir/data/postmaster.pid" ] && [ -n "$bindir" ]; then
            _svc_as_pg_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
            _svc_log "stopped throw-away PostgreSQL in $dir"
        fi
        rm -rf "$dir"
        [ -f "$_CADUCEUS_SVC_STATE/started-postgres" ] && sed -i "\|^$dir\$|d" "$_CADUCEUS_SVC_STATE/started-postgres"
    done
    for dir in $redis_dirs; do
        if [ -f "$dir/redis.pid" ]; then
            kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
            _svc_log "stopped throw-away Redis in $dir"
        fi
        rm -rf "$dir"
        [ -f "$_CADUCEUS_SVC_STATE/started-redis" ] && sed -i "\|^$dir\$|d" "$_CADUCEUS_SVC_STATE/started-redis"
    done
    CADUCEUS_STARTED_PG_DIRS=""
    CADUCEUS_STARTED_REDIS_DIRS=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-up}" in
        up)
            caduceus_services_up
            printf 'export DATABASE_URL=%q\nexport REDIS_URL=%q\n' "$DATABASE_URL" "$REDIS_URL"
            ;;
        down) caduceus_services_down all ;;
        *) echo "usage: scripts/services.sh [up|down]  (or source it and call caduceus_services_up)" >&2; exit 2 ;;
    esac
fi
