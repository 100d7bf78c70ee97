#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root, with no internet access needed beyond the
# package registries: installs what a node needs, builds the release binary, imports the local
# example images, starts `capstan node` with examples/manifests (a web server, and a pod with an
# init container and probes), waits for the web pod to be Ready and fetches its page with curl.
# The node then stays in the foreground: Ctrl-C stops the agent (the pods keep running, as with
# a kubelet; a restart adopts them).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh run
cargo build --release --locked -p capstan -p capstan-testkit --bins
release="$PWD/target/release"
state=/var/lib/capstan
address=127.0.0.1:10255

# Our CNI plugins are the capstan binary under each plugin's name.
mkdir -p "$release/cni-bin" /etc/capstan
for plugin in bridge host-local loopback; do ln -sf "$release/capstan" "$release/cni-bin/$plugin"; done
cat > /etc/capstan/runtime.toml <<TOML
[cni]
conf_dir = "$PWD/examples/cni"
bin_dirs = ["$release/cni-bin"]
TOML

"$release/capstan-example-images" "$release/example-images.tar"
"$release/capstan" images import --state-dir "$state" "$release/example-images.tar"

echo "hack/run.sh: starting capstan node with the manifests in examples/manifests"
"$release/capstan" node --pod-manifest-path "$PWD/examples/manifests" \
  --runtime-config /etc/capstan/runtime.toml --state-dir "$state" \
  --read-only-address "$address" "$@" &
node=$!
trap 'kill $node 2>/dev/null' INT TERM

pod="web-$(hostname | tr '[:upper:]' '[:lower:]')"
for _ in $(seq 1 120); do
  ip=$(curl -fsS "http://$address/pods" 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    if p["metadata"]["name"] == sys.argv[1] and ready:
        print(p["status"]["podIP"])
' "$pod" || true)
  [ -n "$ip" ] && break
  sleep 0.5
done
if [ -z "${ip:-}" ]; then
  echo "hack/run.sh: $pod did not become Ready; see the log above" >&2
  kill $node; exit 1
fi
"$release/capstan" pods --address "$address"
echo "hack/run.sh: curl http://$ip:8080/"
curl -fsS "http://$ip:8080/"
wait $node
