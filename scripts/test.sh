#!/usr/bin/env bash
# THE test command (README, CI): installs tools, finds or starts PostgreSQL/Redis, then runs every
# check of the repository as named steps and prints a summary. Exit code 0 only if no step failed.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh chart examples  only the named steps (tools and services always run first)
#
# Steps: fmt clippy test operator-build crd-sync chart rbac examples network-policies argocd-health
#        dockerfiles images prometheus-rules cluster
# `network-policies` judges the rendered NetworkPolicies with Cyclonus, a real NetworkPolicy engine
# (scripts/netpol/build.sh builds it from the Go module proxy on first use, a few minutes; cached
# in .tools/netpol).
# `cluster` starts the real control plane (scripts/cluster.sh up: builds it from the Go module
# proxy on first use, ~20 min on 2 cores; cached in .tools/control-plane), runs the operator's
# cluster_* tests and the e2e suite against it, and stops it again (unless it was already running).
# The whole script is one block: bash reads it completely before running it, so editing this file
# while it runs cannot derail the run.
{
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The e2e crate and the CRD check use the operator binary built by the operator-build step.
export CADUCEUS_OPERATOR_BIN="$CARGO_TARGET_DIR/debug/caduceus-operator"

ONLY=" $* "
STEPS="fmt clippy test operator-build crd-sync chart rbac examples network-policies argocd-health dockerfiles images prometheus-rules cluster"
for arg in "$@"; do
    if [[ " $STEPS " != *" $arg "* ]]; then
        echo "unknown step '$arg'; steps: $STEPS" >&2
        exit 2
    fi
done
RESULTS=()
FAILED=0
PASSED=0
SKIPPED=0
START_ALL=$(date +%s)

# A step that exits 77 counts as skipped (it prints why).
step() {
    local name="$1"
    shift
    if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then
        return 0
    fi
    printf '\n==> %s: %s\n' "$name" "$*"
    local t0 rc
    t0=$(date +%s)
    "$@" </dev/null
    rc=$?
    local dt=$(($(date +%s) - t0))
    if [ "$rc" = 0 ]; then
        RESULTS+=("ok      $name (${dt}s)")
        PASSED=$((PASSED + 1))
    elif [ "$rc" = 77 ]; then
        RESULTS+=("skipped $name (${dt}s)")
        SKIPPED=$((SKIPPED + 1))
    else
        RESULTS+=("FAILED  $name (${dt}s, exit $rc)")
        FAILED=$((FAILED + 1))
    fi
    printf '<== %s: exit %s (%ss)\n' "$name" "$rc" "$dt"
}

summary() {
    printf '\n==================== summary ====================\n'
    local r
    for r in "${RESULTS[@]}"; do printf '  %s\n' "$r"; done
    printf '  total time %ss\n' "$(($(date +%s) - START_ALL))"
    printf 'steps: %s passed, %s failed, %s skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
}

# --- setup: tools and services (fatal if they fail: nothing else can run) --------------------
echo "==> tools: scripts/tools.sh"
if ! "$ROOT/scripts/tools.sh"; then
    echo "FATAL: scripts/tools.sh failed" >&2
    exit 1
fi
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"
trap 'caduceus_services_down' EXIT
echo "==> services"
if ! caduceus_services_up; then
    echo "FATAL: could not find or start PostgreSQL/Redis" >&2
    exit 1
fi
export DATABASE_URL REDIS_URL
echo "DATABASE_URL and REDIS_URL are set; tools on PATH: $(command -v helm) $(command -v moto_server) $(command -v pg_dump) $(command -v promtool)"

# --- steps -----------------------------------------------------------------------------------
crd_sync() {
    "$ROOT/scripts/check-crds.sh"
}

# Runs one test target of the e2e crate. It counts as skipped when it passed and printed
# "<marker>: SKIPPED" at least <count> times, i.e. every check in it had nothing to run on (the
# cluster suite without a cluster; the rules checks without rule files or rule tests).
e2e_target() {
    local target="$1" marker="$2" count="$3" out rc
    out="$(mktemp)"
    cargo test -p caduceus-e2e --test "$target" -- --nocapture 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ] && [ "$(grep -c "^$marker: SKIPPED" "$out")" -ge "$count" ]; then
        rm -f "$out"
        return 77
    fi
    rm -f "$out"
    return "$rc"
}

# The control plane's binaries build from the Go module proxy in the background while the cargo
# steps run (a fresh machine needs ~20 min of CPU for them; cached runs take a second); the
# cluster step waits for the build.
CONTROL_PLANE_BUILD_LOG="$ROOT/.tmp/control-plane-build.log"
CONTROL_PLANE_BUILD_PID=""
if [ "$ONLY" = "  " ] || [[ "$ONLY" == *" cluster "* ]]; then
    mkdir -p "$ROOT/.tmp"
    "$ROOT/scripts/control-plane/build.sh" >"$CONTROL_PLANE_BUILD_LOG" 2>&1 </dev/null &
    CONTROL_PLANE_BUILD_PID=$!
    echo "==> control plane: building in the background (log: $CONTROL_PLANE_BUILD_LOG)"
fi

# Every connection a rendered platform needs (and a sample it must not make) judged by Cyclonus
# (e2e/tests/network_policies.rs). The operator is built here too, so the step alone is current.
network_policies_step() {
    local out
    out="$("$ROOT/scripts/netpol/build.sh")" || return 1
    out="$(printf '%s\n' "$out" | tail -n1)"
    export CYCLONUS_BIN="${out#CYCLONUS_BIN=}"
    cargo build -p caduceus-operator || return 1
    cargo test -p caduceus-e2e --test network_policies -- --nocapture
}

# The container images: scripts/images.sh builds them without Docker from debug-profile static
# binaries (docs/install.md, "Getting the images"); e2e/tests/images.rs then checks every archive, and every
# image reference the chart and the rendered examples emit (`render` needs the operator binary).
images_step() {
    "$ROOT/scripts/images.sh" --debug || return 1
    cargo build -p caduceus-operator || return 1
    cargo test -p caduceus-e2e --test images -- --nocapture
}

# The control plane: started by the cluster step, stopped when it ends (or on exit).
CLUSTER_STARTED=0
stop_cluster() {
    if [ "$CLUSTER_STARTED" = 1 ]; then
        "$ROOT/scripts/cluster.sh" down || true
        CLUSTER_STARTED=0
    fi
}
trap 'stop_cluster; caduceus_services_down' EXIT

cluster_step() {
    local out kubeconfig rc=0
    if [ -n "$CONTROL_PLANE_BUILD_PID" ] && ! wait "$CONTROL_PLANE_BUILD_PID"; then
        echo "building the control plane failed; last lines of $CONTROL_PLANE_BUILD_LOG:" >&2
        tail -n 40 "$CONTROL_PLANE_BUILD_LOG" >&2
        return 1
    fi
    "$ROOT/scripts/cluster.sh" status 2>/dev/null || CLUSTER_STARTED=1
    out="$("$ROOT/scripts/cluster.sh" up)" || return 1
    kubeconfig="$(printf '%s\n' "$out" | tail -n1)"
    kubeconfig="${kubeconfig#export KUBECONFIG=}"
    echo "cluster: KUBECONFIG=$kubeconfig"
    export CADUCEUS_TEST_KUBECONFIG="$kubeconfig" CADUCEUS_E2E_KUBECONFIG="$kubeconfig"
    cargo test -p caduceus-operator --features cluster-tests --no-fail-fast \
        --test cluster_controller --test cluster_backup --test cluster_compliance \
        --test cluster_api_settings --test cluster_leader_election --test cluster_examples \
        --test cluster_lifecycle --test cluster_namespaced_rbac \
        -- --test-threads=4 || rc=1
    # The e2e suite runs the operator binary (current even when this step runs alone).
    { cargo build -p caduceus-operator && cargo test -p caduceus-e2e --test cluster -- --nocapture; } || rc=1
    stop_cluster
    return "$rc"
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets --all-features -- -D warnings
step test cargo test --workspace --exclude caduceus-e2e --no-fail-fast
step operator-build cargo build -p caduceus-operator
step crd-sync crd_sync
step chart cargo test -p caduceus-e2e --test chart
step rbac cargo test -p caduceus-e2e --test rbac
step examples cargo test -p caduceus-e2e --test examples
step network-policies network_policies_step
step argocd-health cargo test -p caduceus-e2e --test argocd_health
step dockerfiles cargo test -p caduceus-e2e --test dockerfiles
step images images_step
step prometheus-rules e2e_target prometheus_rules prometheus-rules 2
step cluster cluster_step

summary
[ "$FAILED" = 0 ]
exit $?
}
