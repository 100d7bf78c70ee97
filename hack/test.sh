#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then formatting, lints, and every
# unit and integration test. Run as root on Debian 12: the integration tests create network
# namespaces, mounts and cgroups (always below the test process's own cgroup) and a local
# registry on loopback, and remove them again.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh test

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked --quiet
echo "== tests"
cargo nextest run --workspace --locked
