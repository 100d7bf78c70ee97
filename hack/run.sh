#!/usr/bin/env bash
# Quick start: installs what a node needs, builds the release binary and starts a single-host
# node that serves the example pod in examples/manifests. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh run
cargo build --release --locked --bin capstan
echo "hack/run.sh: starting capstan node with the manifests in examples/manifests"
exec target/release/capstan node --pod-manifest-path "$PWD/examples/manifests" "$@"
