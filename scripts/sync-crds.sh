#!/usr/bin/env bash
# Copies crds/*.yaml into the Helm chart's crds/ (byte-identical; stale chart files are removed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/charts/caduceus-operator/crds"
mkdir -p "$DEST"
shopt -s nullglob
for f in "$DEST"/*; do
    [ -e "$ROOT/crds/$(basename "$f")" ] || { rm -f "$f"; echo "removed $f"; }
done
for f in "$ROOT"/crds/*.yaml; do
    cp "$f" "$DEST/"
    echo "copied crds/$(basename "$f") -> charts/caduceus-operator/crds/"
done
