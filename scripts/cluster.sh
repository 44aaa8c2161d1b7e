#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, built from the Go module proxy
# (scripts/control-plane/): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
# KWOK as the kubelet stand-in with fake Nodes in three zones. No containers run: KWOK makes
# scheduled Pods Running and Ready, so Deployments and StatefulSets report real status.
#
#   scripts/cluster.sh up       build what is missing, start, wait, create the Nodes; the LAST line
#                               of stdout is `export KUBECONFIG=<absolute path>`; exits 0 leaving
#                               the processes running. A second `up` reuses the running plane.
#   scripts/cluster.sh down     stop what `up` started (by pid) and remove its state
#   scripts/cluster.sh status   exit 0 when the control plane answers
#
# State (certificates, etcd data, logs, pids, kubeconfig) lives in .tmp/cluster/ (override with
# CADUCEUS_CLUSTER_DIR). Admin access is a client certificate in group system:masters; the API
# server authorizes with RBAC and admits with its default plugins plus PodSecurity.
# Storage: KWOK's StorageClass `kwok-volume` (the default, expansion allowed) and its volume
# stages, which provision a PersistentVolume for every claim and bind it (no real disks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${CADUCEUS_CLUSTER_DIR:-$ROOT/.tmp/cluster}"
NODES="${CADUCEUS_CLUSTER_NODES:-3}"
ZONES=(zone-a zone-b zone-c)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    printf 'cluster: ERROR: %s\n' "$*" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

alive() {
    local pid
    [ -f "$STATE/$1.pid" ] || return 1
    pid="$(cat "$STATE/$1.pid")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

kubectl_admin() {
    "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" "$@"
}

answers() {
    [ -f "$STATE/admin.kubeconfig" ] && kubectl_admin get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# --- certificates ----------------------------------------------------------------------------
# sign NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA.
sign() {
    local name="$1" subj="$2" san="${3:-}" ext
    openssl genrsa -out "$STATE/pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$STATE/pki/$name.key" -subj "$subj" -out "$STATE/pki/$name.csr" 2>/dev/null
    ext="$STATE/pki/$name.ext"
    if [ -n "$san" ]; then
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
    else
        printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    fi
    openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
        -CAcreateserial -days 365 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
}

make_pki() {
    mkdir -p "$STATE/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=caduceus-test-ca" \
        -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt" 2>/dev/null
    sign apiserver "/CN=kube-apiserver" \
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
    sign admin "/O=system:masters/CN=caduceus-admin"
    openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
}

write_kubeconfig() {
    local port="$1"
    cat >"$STATE/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: caduceus-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $STATE/pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $STATE/pki/admin.crt
    client-key: $STATE/pki/admin.key
contexts:
- name: caduceus-test
  context: {cluster: caduceus-test, user: admin}
current-context: caduceus-test
EOF
}

# start NAME COMMAND...: runs the command in the background with its log in $STATE/NAME.log.
start() {
    local name="$1"
    shift
    "$@" >"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

wait_for() {
    local what="$1" seconds="$2" i
    shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        if "$@"; then return 0; fi
        sleep 0.25
    done
    return 1
}

fail_start() {
    local name="$1"
    log "$name did not come up; last lines of $STATE/$name.log:"
    tail -n 30 "$STATE/$name.log" >&2 || true
    down
    exit 1
}

# --- objects the plane needs -----------------------------------------------------------------
nodes_and_storage() {
    local i zone
    {
        for ((i = 0; i < NODES; i++)); do
            zone="${ZONES[$((i % ${#ZONES[@]}))]}"
            cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    topology.kubernetes.io/zone: $zone
    topology.kubernetes.io/region: local
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
EOF
        done
        # KWOK's StorageClass (default): its volume stages provision and bind a PV per claim.
        # Expansion allowed, so a claim's size can be raised (KWOK resizes nothing; the claim's
        # spec is what the operator is judged on).
        awk 'BEGIN { RS = "---\n" } /kind: StorageClass/ { printf "---\n%s", $0 }' "$KWOK_BIN/stages.yaml"
        printf 'allowVolumeExpansion: true\n'
    } | kubectl_admin apply --server-side --field-manager=caduceus-cluster-sh -f - >/dev/null
}

# --- up / down -------------------------------------------------------------------------------
up() {
    KUBECTL="$(command -v kubectl || true)"
    [ -x "$ROOT/.tools/bin/kubectl" ] && KUBECTL="$ROOT/.tools/bin/kubectl"
    [ -n "$KUBECTL" ] || die "kubectl not found (run scripts/tools.sh)"
    command -v openssl >/dev/null || die "openssl not found"

    if alive kube-apiserver && answers; then
        local c
        for c in "${COMPONENTS[@]}"; do
            alive "$c" || die "$c (pid $(cat "$STATE/$c.pid" 2>/dev/null)) is gone; run \`$0 down\` and \`$0 up\`"
        done
        log "the control plane in $STATE is already running"
        echo "export KUBECONFIG=$STATE/admin.kubeconfig"
        return 0
    fi
    if [ -d "$STATE" ]; then
        log "removing stale state in $STATE"
        down
    fi

    local bins
    bins="$("$ROOT/scripts/control-plane/build.sh")" || die "building the control plane failed (see above)"
    local K8S_BIN ETCD_BIN KWOK_BIN CRDS_DIR K8S_VERSION
    eval "$bins"

    mkdir -p "$STATE"
    # Tests find the third-party CRDs (CloudNativePG, Prometheus Operator) beside the kubeconfig.
    ln -sfn "$CRDS_DIR" "$STATE/third-party-crds"
    make_pki
    local etcd_port peer_port api_port
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    api_port="$(free_port)"
    write_kubeconfig "$api_port"

    start etcd "$ETCD_BIN/etcd" --name caduceus --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "caduceus=http://127.0.0.1:$peer_port" --listen-metrics-urls "" \
        --unsafe-no-fsync=true --quota-backend-bytes=4294967296 --log-level=warn
    wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health" -o /dev/null || fail_start etcd

    start kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
        --client-ca-file "$STATE/pki/ca.crt" \
        --service-cluster-ip-range 10.96.0.0/16 \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$STATE/pki/sa.pub" \
        --service-account-signing-key-file "$STATE/pki/sa.key" \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins PodSecurity \
        --allow-privileged=true \
        --endpoint-reconciler-type none \
        --profiling=false --v=0
    wait_for kube-apiserver 90 answers || fail_start kube-apiserver

    start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$STATE/admin.kubeconfig" --authentication-kubeconfig "$STATE/admin.kubeconfig" \
        --authorization-kubeconfig "$STATE/admin.kubeconfig" \
        --root-ca-file "$STATE/pki/ca.crt" --service-account-private-key-file "$STATE/pki/sa.key" \
        --use-service-account-credentials=false \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
        --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
        --concurrent-deployment-syncs 10 --concurrent-statefulset-syncs 10 \
        --kube-api-qps 200 --kube-api-burst 400 --v=0
    start kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig "$STATE/admin.kubeconfig" --authentication-kubeconfig "$STATE/admin.kubeconfig" \
        --authorization-kubeconfig "$STATE/admin.kubeconfig" \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --v=0
    # Stage objects only (the StorageClass in the same file is applied through the API below).
    awk 'BEGIN { RS = "---\n" } /kind: Stage/ { printf "---\n%s", $0 }' "$KWOK_BIN/stages.yaml" >"$STATE/kwok-stages.yaml"
    start kwok "$KWOK_BIN/kwok" --kubeconfig "$STATE/admin.kubeconfig" --config "$STATE/kwok-stages.yaml" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-ip 10.244.0.1 --cidr 10.244.0.0/16 --server-address "" --v=0

    wait_for "default namespace" 60 kubectl_admin get serviceaccount default -n default >/dev/null 2>&1 \
        || fail_start kube-controller-manager
    nodes_and_storage || fail_start kube-apiserver
    wait_for "Ready nodes" 60 nodes_ready || fail_start kwok
    for c in "${COMPONENTS[@]}"; do alive "$c" || fail_start "$c"; done
    log "control plane $K8S_VERSION up: https://127.0.0.1:$api_port, $NODES KWOK nodes in ${#ZONES[@]} zones, state in $STATE"
    echo "export KUBECONFIG=$STATE/admin.kubeconfig"
}

nodes_ready() {
    local ready
    ready="$(kubectl_admin get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)"
    [ "$ready" -ge "$NODES" ]
}

down() {
    local c pid i
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c="${COMPONENTS[$i]}"
        if alive "$c"; then
            pid="$(cat "$STATE/$c.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$STATE"
}

case "${1:-}" in
    up) up ;;
    down)
        down
        log "stopped; state removed"
        ;;
    status)
        KUBECTL="$ROOT/.tools/bin/kubectl"
        [ -x "$KUBECTL" ] || KUBECTL=kubectl
        answers
        ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
