#!/usr/bin/env bash
# THE main-job command (README).
#   - If $KUBECONFIG (or ~/.kube/config) reaches a cluster: install/refresh the CRD and run the
#     operator against it in the foreground (`cargo run -p caduceus-operator -- run`).
#   - Otherwise: run the API server locally with throw-away PostgreSQL/Redis, keys, migrations and
#     demo data (scripts/api-local.sh, which prints the URL and credentials).
# It installs only what that needs (`scripts/tools.sh run`: PostgreSQL/Redis binaries, and
# helm/kubectl when a kubeconfig exists), not the test tools, and shows cargo's progress.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "run: checking what the main job needs (scripts/tools.sh run; the first time it installs PostgreSQL/Redis with apt-get, and helm/kubectl when a kubeconfig exists)"
"$ROOT/scripts/tools.sh" run >/dev/null
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

kubeconfig="${KUBECONFIG:-$HOME/.kube/config}"
cluster=0
if [ -n "${KUBECONFIG:-}" ] || [ -f "$kubeconfig" ]; then
    if kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
        cluster=1
    else
        echo "run: $kubeconfig does not reach a cluster (kubectl cluster-info failed within 5s)"
    fi
fi

if [ "$cluster" = 1 ]; then
    echo "run: cluster $(kubectl config current-context 2>/dev/null || echo '?') answers: installing the CRD and starting the operator"
    kubectl apply --server-side --field-manager=caduceus-run -f "$ROOT/crds/"
    operators="$(kubectl get deployments --all-namespaces -l app.kubernetes.io/name=caduceus-operator --no-headers 2>/dev/null || true)"
    if [ -n "$operators" ]; then
        echo "run: WARNING: an operator Deployment already runs in this cluster; two operators would fight over every platform (helm uninstall it, or scale it to 0)" >&2
    fi
    echo "run: operator starting (Ctrl-C stops it); apply a platform with: kubectl create namespace caduceus-demo && kubectl apply -f examples/minimal.yaml && kubectl -n caduceus-demo get hcp -w"
    echo "run: building caduceus-operator (debug) with cargo, progress below (a fresh target/ takes several minutes; afterwards only what changed)"
    # One local process: no leader election (and no Lease left in the default namespace).
    exec cargo run -p caduceus-operator -- run --leader-election false
fi

if [ ! -f "$ROOT/scripts/api-local.sh" ]; then
    echo "run: no Kubernetes cluster reachable, and scripts/api-local.sh (the local API runner) does not exist in this checkout yet; nothing to run." >&2
    exit 1
fi
echo "run: no Kubernetes cluster reachable; starting the API locally (scripts/api-local.sh)"
exec bash "$ROOT/scripts/api-local.sh" "$@"
