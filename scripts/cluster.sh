#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the cluster test tier (tests/e2e, `make e2e`):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes and pod
# lifecycle, out-of-cluster), all built by scripts/tools.sh at pinned versions. No kubelet and no
# container runtime: kwok plays the kubelet of every node annotated kwok.x-k8s.io/node=fake and
# moves pods through the stages in scripts/cluster/kwok-stages.yaml.
#
# Usage:
#   scripts/cluster.sh start DIR   generate certificates and keys, start every component, wait until
#                                  the API server is ready and the controllers hold their watches;
#                                  writes DIR/kubeconfig (client-certificate admin, system:masters)
#   scripts/cluster.sh stop DIR    stop every component started in DIR (SIGTERM, then SIGKILL)
#
# All state (etcd data, certificates, logs in DIR/logs, pid files) lives under DIR; nothing
# outside it is touched. Every listener is bound to 127.0.0.1 on a free port.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
READY_TIMEOUT_S="${CRYOKUBE_CLUSTER_READY_TIMEOUT_S:-120}"

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# openssl req/x509 with an EC P-256 key: fast to generate, accepted by every component.
make_certs() {
  local d="$1/pki"
  mkdir -p "$d"
  (
    cd "$d"
    umask 077
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj "/CN=cryokube-e2e-ca" -days 2 -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    issue() { # NAME SUBJECT EXTENSIONS
      openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
      'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local')"
    issue admin "/O=system:masters/CN=cryokube-e2e-admin" "$(printf '%s\n' \
      'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')"
    # Service-account token signing pair (TokenRequest API, the token controller).
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
  ) >/dev/null
}

write_kubeconfig() { # DIR PORT
  local pki="$1/pki"
  cat >"$1/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$2
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
EOF
  chmod 600 "$1/kubeconfig"
}

launch() { # DIR NAME ARGS...
  local dir="$1" name="$2"
  shift 2
  # setsid: a Ctrl-C in the caller's terminal reaches the caller, which then runs `stop`.
  setsid "$BIN/$name" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

alive_or_die() { # DIR NAME
  local pid
  pid="$(cat "$1/$2.pid")"
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$1/logs/$2.log" >&2 || true
    die "$2 exited during start-up (log: $1/logs/$2.log)"
  fi
}

wait_for() { # DIR NAME DESCRIPTION COMMAND...
  local dir="$1" name="$2" what="$3"
  shift 3
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    alive_or_die "$dir" "$name"
    ((SECONDS < deadline)) || die "$name: $what not reached in ${READY_TIMEOUT_S} s (log: $dir/logs/$name.log)"
    sleep 0.3
  done
}

start() {
  local dir="$1"
  for c in "${COMPONENTS[@]}"; do
    [[ -x "$BIN/$c" ]] || die "$BIN/$c is missing: run scripts/tools.sh (make tools)"
  done
  [[ -e "$dir/etcd.pid" ]] && die "$dir already holds a cluster; stop it first"
  mkdir -p "$dir/logs" "$dir/etcd"
  dir="$(cd "$dir" && pwd)"
  # A start that fails half-way stops what it started.
  trap 'stop "$dir"' EXIT
  make_certs "$dir"
  local etcd_port peer_port api_port
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  api_port="$(free_port)"
  write_kubeconfig "$dir" "$api_port"
  local kc="$dir/kubeconfig" pki="$dir/pki"

  # A throw-away store: no fsync (tests never survive a power cut), warnings only.
  launch "$dir" etcd --name e2e --data-dir "$dir/etcd" --unsafe-no-fsync --log-level warn \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port"
  wait_for "$dir" etcd "health" curl -fsS "http://127.0.0.1:$etcd_port/health"

  launch "$dir" kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$dir/pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=false --profiling=false \
    --endpoint-reconciler-type none
  wait_for "$dir" kube-apiserver "/readyz" curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "https://127.0.0.1:$api_port/readyz"

  # One process each, no leader election, serving nothing: only the API server listens.
  launch "$dir" kube-controller-manager --kubeconfig "$kc" --leader-elect=false --secure-port 0 \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --kube-api-qps 200 --kube-api-burst 400 \
    --concurrent-job-syncs 20 --profiling=false
  launch "$dir" kube-scheduler --kubeconfig "$kc" --leader-elect=false --secure-port 0 \
    --kube-api-qps 200 --kube-api-burst 400 --profiling=false
  # kwok out of cluster: only nodes annotated kwok.x-k8s.io/node=fake, never real ones.
  launch "$dir" kwok --kubeconfig "$kc" --config "$ROOT/scripts/cluster/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.244.0.1/16 --node-ip 10.0.0.2 --server-address ""

  # The service-account controller creating `default` proves the controller manager is serving.
  wait_for "$dir" kube-controller-manager "the default ServiceAccount" \
    curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default"
  for c in kube-scheduler kwok; do
    alive_or_die "$dir" "$c"
  done
  trap - EXIT
  echo "cluster.sh: control plane ready at https://127.0.0.1:$api_port (KUBECONFIG=$kc)" >&2
}

stop() {
  local dir="$1" pid
  local reversed=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    reversed+=("${COMPONENTS[i]}")
  done
  for c in "${reversed[@]}"; do
    [[ -f "$dir/$c.pid" ]] || continue
    pid="$(cat "$dir/$c.pid")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$c.pid"
  done
}

case "${1:-}:${2:-}" in
  start:?*) start "$2" ;;
  stop:?*) stop "$2" ;;
  *) die "usage: scripts/cluster.sh start|stop DIR" ;;
esac
