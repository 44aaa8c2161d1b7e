#!/usr/bin/env bash
# Builds the NetworkPolicy engine the `network-policies` check judges the operator's policies
# with, from the Go module proxy, the way scripts/control-plane/build.sh builds etcd and KWOK:
# the Go module beside this script pins it (go.mod `tool` directive, go.sum for every
# dependency), and the binary is cached in .tools/netpol/<key>/, where <key> is the tool, its
# pinned version and a hash of go.mod/go.sum. An existing binary is left alone.
#
#   scripts/netpol/build.sh      build it if missing; the LAST line of stdout is
#                                `CYCLONUS_BIN=<absolute path of the binary>`
#
# The engine: policy-assistant (sigs.k8s.io/network-policy-api, cmd/policy-assistant) was asked
# for first. The proxy serves sigs.k8s.io/network-policy-api v0.3.0 and v0.1.1, but neither zip
# holds cmd/policy-assistant (a nested module, left out of the root module's zip), and the
# nested module itself is refused:
#   sigs.k8s.io/network-policy-api/cmd/policy-assistant/@v/list: 404 Not Found
#   sigs.k8s.io/network-policy-api/policy-assistant/@v/list: 404 Not Found  (its go.mod's path)
#   .../cmd/policy-assistant/@v/{main,<commit>}.info: 403 Forbidden
#       "This module version is not available."
# so this builds Cyclonus v0.5.6 (github.com/mattfenwick/cyclonus), which policy-assistant was
# derived from and whose `analyze --mode query-traffic` it keeps (same traffic file, same matcher
# for networking.k8s.io/v1 NetworkPolicies).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$ROOT/.tools/netpol"
MODULE=github.com/mattfenwick/cyclonus
PKG="$MODULE/cmd/cyclonus"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"

log() { printf 'netpol: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

command -v go >/dev/null || die "go is not on PATH (needed to build $PKG from the Go module proxy)"

# The version of MODULE required by go.mod (inside or outside a require block).
VERSION="$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$HERE/go.mod")"
[ -n "$VERSION" ] || die "no pinned version of $MODULE in $HERE/go.mod"
grep -q "^tool $PKG\$" "$HERE/go.mod" || die "$HERE/go.mod has no \`tool $PKG\` directive"

SUM="$(cat "$HERE/go.mod" "$HERE/go.sum" | sha256sum | cut -c1-12)"
DEST="$OUT/cyclonus-$VERSION-$SUM"
BIN="$DEST/cyclonus"
if [ ! -x "$BIN" ]; then
    mkdir -p "$DEST"
    log "building cyclonus $VERSION ($PKG) into $DEST (first build: a few minutes)"
    (cd "$HERE" && go build -ldflags "-s -w -X $MODULE/pkg/cli.version=$VERSION" -o "$BIN.tmp" "$PKG") ||
        die "go build $PKG@$VERSION failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
    mv "$BIN.tmp" "$BIN"
fi
"$BIN" version >/dev/null 2>&1 || die "$BIN does not run (\`$BIN version\` failed)"

printf 'CYCLONUS_BIN=%s\n' "$BIN"
