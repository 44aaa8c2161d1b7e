#!/usr/bin/env bash
# Fails when crds/ is stale against the operator's Rust types (`caduceus-operator crd`), or when
# the Helm chart's crds/ is not byte-identical to crds/. Fix with the commands it prints.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CADUCEUS_OPERATOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/caduceus-operator}"
CHART_CRDS="$ROOT/charts/caduceus-operator/crds"
status=0

[ -x "$BIN" ] || { echo "crd-sync: $BIN not built (cargo build -p caduceus-operator)" >&2; exit 1; }
shopt -s nullglob
files=("$ROOT"/crds/*.yaml)
[ "${#files[@]}" -gt 0 ] || { echo "crd-sync: crds/ holds no *.yaml" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! "$BIN" crd >"$tmp/generated.yaml"; then
    echo "crd-sync: '$BIN crd' failed" >&2
    exit 1
fi
# crds/*.yaml in name order, concatenated, must equal what the operator prints.
cat "${files[@]}" >"$tmp/committed.yaml"
if cmp -s "$tmp/generated.yaml" "$tmp/committed.yaml"; then
    echo "crd-sync: crds/ matches 'caduceus-operator crd'"
else
    echo "crd-sync: crds/ is STALE against the operator's types; regenerate it with 'cargo run -p caduceus-operator -- crd' (diff below, committed -> generated)" >&2
    diff -u "$tmp/committed.yaml" "$tmp/generated.yaml" | head -n 60 >&2 || true
    status=1
fi

for f in "${files[@]}"; do
    name="$(basename "$f")"
    if ! cmp -s "$f" "$CHART_CRDS/$name"; then
        echo "crd-sync: charts/caduceus-operator/crds/$name differs from crds/$name; run scripts/sync-crds.sh" >&2
        status=1
    fi
done
for f in "$CHART_CRDS"/*; do
    [ -e "$ROOT/crds/$(basename "$f")" ] || { echo "crd-sync: charts/caduceus-operator/crds/$(basename "$f") has no counterpart in crds/; run scripts/sync-crds.sh" >&2; status=1; }
done
[ "$status" = 0 ] && echo "crd-sync: chart crds/ is byte-identical to crds/"
exit "$status"
