#!/usr/bin/env bash
# Run the Caduceus API locally for a person to try (docs/api.md, "Run the API locally").
#
#   scripts/api-local.sh [--release]
#
# 1. Postgres and Redis: DATABASE_URL / REDIS_URL when they answer, otherwise the local defaults,
#    otherwise throw-away instances started from the system's binaries (scripts/services.sh).
#    Unless you passed your own DATABASE_URL, the demo uses a fresh database `caduceus_local`
#    (dropped and re-created on every run).
# 2. Builds caduceus-api, generates keys once into .tmp/api-local/keys (`keys generate`), runs
#    `db-setup` as the owner (migrations and the runtime role), then serves as the runtime role.
# 3. Starts the API, then seeds through the real API with curl: an admin (`create-admin`), one
#    user per role, demo patients (one linked to the patient account), an appointment and a
#    prescription.
# 4. Prints the URL, the docs URL and the demo credentials; the API stays in the foreground
#    (Ctrl-C stops it and any throw-away Postgres/Redis this script started).
#
# Environment: CADUCEUS_LOCAL_PORT (default 8080), CADUCEUS_LOCAL_ADMIN_PORT (default 9090); a busy
# port is replaced by a free one. Demo password for every account: caduceus-demo-password
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=debug
CARGO_PROFILE_ARGS=()
case "${1:-}" in
    --release) PROFILE=release; CARGO_PROFILE_ARGS=(--release) ;;
    "") ;;
    *) echo "usage: scripts/api-local.sh [--release]" >&2; exit 2 ;;
esac

DEMO_PASSWORD="caduceus-demo-password"
STATE_DIR="$ROOT/.tmp/api-local"
mkdir -p "$STATE_DIR"
log() { printf 'api-local: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in curl psql python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install curl postgresql-client python3)"
done

# shellcheck source=scripts/env.sh
[ -f "$ROOT/scripts/env.sh" ] && source "$ROOT/scripts/env.sh"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"

USER_DB_URL="${DATABASE_URL:-}"
caduceus_services_up || die "no PostgreSQL/Redis available"

API_PID=""
cleanup() {
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        kill -TERM "$API_PID" 2>/dev/null || true
        wait "$API_PID" 2>/dev/null || true
    fi
    caduceus_services_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A dedicated, fresh database unless the caller named one that answers.
if [ -n "$USER_DB_URL" ] && [ "$USER_DB_URL" = "$DATABASE_URL" ]; then
    log "using DATABASE_URL as given (existing data kept)"
else
    psql "$DATABASE_URL" -XqAt -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS caduceus_local WITH (FORCE)" \
        -c "CREATE DATABASE caduceus_local" >/dev/null || die "cannot create database caduceus_local"
    DATABASE_URL="$(python3 - "$DATABASE_URL" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit((u.scheme, u.netloc, "/caduceus_local", u.query, u.fragment)))
EOF
)"
    export DATABASE_URL
    log "fresh database caduceus_local"
fi

free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
want = int(sys.argv[1])
s = socket.socket()
try:
    s.bind(("127.0.0.1", want))
except OSError:
    s.close(); s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1]); s.close()
EOF
}
PORT="$(free_port "${CADUCEUS_LOCAL_PORT:-8080}")"
ADMIN_PORT="$(free_port "${CADUCEUS_LOCAL_ADMIN_PORT:-9090}")"
[ "$ADMIN_PORT" = "$PORT" ] && ADMIN_PORT="$(free_port 0)"

# Not quiet: a cold build takes minutes, and so does the first one after scripts/test.sh, which
# built the same crates with the features of the whole workspace and its tests (hyper with its
# client, syn with `visit`, the full regex); `-p caduceus-api` alone resolves fewer features, so
# cargo compiles those dependencies, and everything above them, again for this build.
log "building caduceus-api ($PROFILE) with cargo; its progress follows. A fresh target/ takes several minutes."
log "Right after scripts/test.sh it rebuilds too: ~30 crates (hyper, syn, regex, ...) get fewer features for the"
log "API alone than in the test build, so they and the crates built on them compile again (minutes on 2 cores);"
log "later runs rebuild only what changed"
cargo build -p caduceus-api "${CARGO_PROFILE_ARGS[@]}" || die "build failed"
log "built $PROFILE caduceus-api"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/$PROFILE/caduceus-api"
[ -x "$BIN" ] || die "no binary at $BIN"

KEYS="$STATE_DIR/keys"
if [ ! -f "$KEYS/jwt.key" ] || [ ! -f "$KEYS/phi-keys.json" ]; then
    rm -rf "$KEYS"
    "$BIN" keys generate --out "$KEYS" >/dev/null
    log "generated keys in $KEYS"
fi
export CADUCEUS_JWT_KEY_FILE="$KEYS/jwt.key"
export CADUCEUS_PHI_KEYS_FILE="$KEYS/phi-keys.json"
export CADUCEUS_HTTP_ADDR="127.0.0.1:$PORT"
export CADUCEUS_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT"
export REDIS_URL

# The owner (DATABASE_URL) migrates and sets up the API's runtime role; serve connects as that
# role, which is neither superuser nor owner (it cannot rewrite the audit trail).
APP_DB_USER="${CADUCEUS_APP_DB_USER:-caduceus_app_local}"
APP_DB_PWFILE="$STATE_DIR/app-db-password"
[ -s "$APP_DB_PWFILE" ] || (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$APP_DB_PWFILE")
APP_DB_PASSWORD="$(cat "$APP_DB_PWFILE")"
CADUCEUS_APP_DB_USER="$APP_DB_USER" CADUCEUS_APP_DB_PASSWORD="$APP_DB_PASSWORD" \
    "$BIN" db-setup >&2 || die "db-setup failed"
APP_DB_URL="$(python3 - "$DATABASE_URL" "$APP_DB_USER" "$APP_DB_PASSWORD" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
host = u.netloc.rsplit("@", 1)[-1]
netloc = urllib.parse.quote(sys.argv[2], safe="") + ":" + urllib.parse.quote(sys.argv[3], safe="") + "@" + host
print(urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment)))
EOF
)"

ADMIN_EMAIL="admin@caduceus.local"
PWFILE="$STATE_DIR/demo-password"
(umask 077; printf '%s\n' "$DEMO_PASSWORD" >"$PWFILE")
if ! out="$("$BIN" create-admin --email "$ADMIN_EMAIL" --password-file "$PWFILE" 2>&1)"; then
    case "$out" in
        *"already exists"*) log "admin account already exists" ;;
        *) die "create-admin: $out" ;;
    esac
fi

DATABASE_URL="$APP_DB_URL" "$BIN" serve &
API_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
    curl -fsS "$BASE/health/live" >/dev/null 2>&1 && break
    kill -0 "$API_PID" 2>/dev/null || die "caduceus-api exited during startup"
    sleep 0.2
done
curl -fsS "$BASE/health/live" >/dev/null || die "the API did not come up on $BASE"

# --- seed through the real API ------------------------------------------------------------------
# api METHOD PATH TOKEN [JSON] -> prints the body; fails on 4xx/5xx except 409 (already there)
api() {
    local method=$1 path=$2 token=$3 body=${4:-} out status
    local args=(-sS -X "$method" -o - -w '\n%{http_code}' -H "authorization: Bearer $token")
    [ -n "$body" ] && args+=(-H 'content-type: application/json' --data "$body")
    out="$(curl "${args[@]}" "$BASE/api/v1$path")" || die "$method $path: no answer"
    status="${out##*$'\n'}"
    out="${out%$'\n'*}"
    case "$status" in
        2??) printf '%s' "$out" ;;
        409) printf '' ;;
        *) die "$method $path -> $status: $out" ;;
    esac
}
json_field() { python3 -c 'import json,sys; d=sys.stdin.read(); print(json.loads(d)[sys.argv[1]] if d else "")' "$1"; }
login() {
    curl -fsS -H 'content-type: application/json' \
        --data "{\"email\":\"$1\",\"password\":\"$DEMO_PASSWORD\"}" "$BASE/api/v1/auth/login" |
        json_field access_token
}

ADMIN_TOKEN="$(login "$ADMIN_EMAIL")" || die "admin login failed"
for role in physician nurse receptionist; do
    api POST /users "$ADMIN_TOKEN" \
        "{\"email\":\"$role@caduceus.local\",\"password\":\"$DEMO_PASSWORD\",\"role\":\"$role\",\"display_name\":\"Demo ${role^}\"}" >/dev/null
done
DOC_TOKEN="$(login physician@caduceus.local)" || die "physician login failed"
DOC_ID="$(api GET /me "$DOC_TOKEN" | json_field id)"

patient() { # mrn given family birth sex allergies(json) medications(json)
    api POST /patients "$DOC_TOKEN" "{\"mrn\":\"$1\",\"given_name\":\"$2\",\"family_name\":\"$3\",\"birth_date\":\"$4\",\"sex\":\"$5\",\"allergies\":$6,\"medications\":$7,\"conditions\":[]}" |
        json_field id
}
P1="$(patient DEMO-0001 Ada Lovelace 1985-12-10 female '["Penicillin"]' '["Warfarin 5 mg"]')"
patient DEMO-0002 Alan Turing 1972-06-23 male '[]' '["Sildenafil 50 mg"]' >/dev/null
patient DEMO-0003 Grace Hopper 1950-12-09 female '["Sulfa drugs"]' '[]' >/dev/null
if [ -n "$P1" ]; then
    api POST /users "$ADMIN_TOKEN" \
        "{\"email\":\"patient@caduceus.local\",\"password\":\"$DEMO_PASSWORD\",\"role\":\"patient\",\"display_name\":\"Ada Lovelace\",\"patient_id\":\"$P1\"}" >/dev/null
    START="$(date -u -d 'tomorrow 09:00' +%Y-%m-%dT%H:%M:%SZ)"
    END="$(date -u -d 'tomorrow 09:30' +%Y-%m-%dT%H:%M:%SZ)"
    api POST /appointments "$DOC_TOKEN" \
        "{\"patient_id\":\"$P1\",\"practitioner_id\":\"$DOC_ID\",\"start\":\"$START\",\"end\":\"$END\",\"reason\":\"INR check\"}" >/dev/null
    api POST /prescriptions "$DOC_TOKEN" \
        "{\"patient_id\":\"$P1\",\"medication\":{\"name\":\"Metformin 500 mg\",\"code\":\"6809\"},\"dose\":\"500 mg\",\"route\":\"oral\",\"frequency\":\"twice daily\",\"duration_days\":90}" >/dev/null
fi

cat <<EOF

  Caduceus API is running (pid $API_PID, $PROFILE build)
    API:      $BASE/api/v1
    Docs:     $BASE/api/v1/docs        (OpenAPI: $BASE/api/v1/openapi.json)
    Admin:    http://127.0.0.1:$ADMIN_PORT/metrics, /health/detailed, /internal/compliance
    Database: $(printf '%s' "$DATABASE_URL" | sed -E 's#//[^@/]*@#//***@#') (serving as role $APP_DB_USER)

  Demo accounts (password for all: $DEMO_PASSWORD)
    admin@caduceus.local         admin
    physician@caduceus.local     physician (registered the demo patients: full access)
    nurse@caduceus.local         nurse
    receptionist@caduceus.local  receptionist
    patient@caduceus.local       patient, linked to Ada Lovelace (MRN DEMO-0001)

  Try:
    TOKEN=\$(curl -s -H 'content-type: application/json' \\
      -d '{"email":"physician@caduceus.local","password":"$DEMO_PASSWORD"}' \\
      $BASE/api/v1/auth/login | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -s -H "authorization: Bearer \$TOKEN" $BASE/api/v1/patients
  (logins are limited to 5 per minute per client IP)

  Ctrl-C stops the API (and any throw-away Postgres/Redis this script started).
EOF

wait "$API_PID"
