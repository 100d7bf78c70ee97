#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root, with no internet access needed beyond the
# package registries: installs what a node needs, builds the release binary, imports the local
# example images and starts `capstan server` (control plane and node in one process, the
# bundled CNI set up by the server). Then, with kubectl and the admin kubeconfig the server
# wrote, it applies examples/cluster/web.yaml (a Deployment of three web servers), waits for the
# rollout, shows `kubectl get pods -o wide` and fetches a page from a pod with curl. The server
# then stays in the foreground: Ctrl-C stops it (the pods keep running, as with a kubelet; a
# restart adopts them).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh run
cargo build --release --locked -p capstan -p capstan-testkit --bins
release="$PWD/target/release"
state=/var/lib/capstan
export KUBECONFIG="$state/control-plane/admin.kubeconfig"
command -v kubectl >/dev/null || { echo "hack/run.sh: kubectl is needed to talk to the cluster" >&2; exit 1; }

"$release/capstan-example-images" "$release/example-images.tar"
"$release/capstan" images import --state-dir "$state" "$release/example-images.tar"

echo "hack/run.sh: starting capstan server"
# Static pods for this node go in $state/manifests (none at first).
mkdir -p "$state/manifests"
"$release/capstan" server --data-dir "$state/control-plane" --state-dir "$state" \
  --pod-manifest-path "$state/manifests" "$@" &
server=$!
trap 'kill $server 2>/dev/null' INT TERM

node_ready() {
  kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{.spec.podCIDR}{"\n"}{end}' 2>/dev/null |
    grep -q '^True.'
}
for _ in $(seq 1 120); do
  [ -f "$KUBECONFIG" ] && node_ready && break
  kill -0 $server 2>/dev/null || { echo "hack/run.sh: capstan server exited; see the log above" >&2; exit 1; }
  sleep 0.5
done
node_ready || { echo "hack/run.sh: the node did not become Ready; see the log above" >&2; kill $server; exit 1; }
kubectl get nodes -o wide

kubectl apply -f examples/cluster/web.yaml
kubectl rollout status deployment/web --timeout=120s
kubectl get pods -o wide
ip=$(kubectl get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
echo "hack/run.sh: curl http://$ip:8080/"
curl -fsS "http://$ip:8080/"
echo "hack/run.sh: the cluster keeps running; KUBECONFIG=$KUBECONFIG kubectl ... talks to it"
wait $server
