#!/usr/bin/env bash
# Installs what Capstan needs on a Debian 12 host, as root. `deps.sh run` installs what running
# a node needs; `deps.sh test` adds what the test suite uses (a local registry, skopeo, ...).
# apt-get runs only when something is missing, so repeated calls cost nothing.
set -euo pipefail

purpose=${1:-run}
run_packages=(iproute2 busybox-static ca-certificates pkg-config protobuf-compiler libprotobuf-dev libseccomp-dev curl python3)
test_packages=(docker-registry skopeo apache2-utils openssl containernetworking-plugins containerd runc crun golang-go golang-google-grpc-dev etcd-server)

case "$purpose" in
  run) wanted=("${run_packages[@]}") ;;
  test) wanted=("${run_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "hack/deps.sh: run as root (it installs Debian packages, and Capstan manages namespaces and cgroups)" >&2
  exit 1
fi

missing=()
for package in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "hack/deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services such as docker-registry must not start system-wide: tests start their own.
  policy=/usr/sbin/policy-rc.d
  created_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$created_policy" ]; then rm -f "$policy"; fi
fi

if ! command -v cargo >/dev/null; then
  echo "hack/deps.sh: cargo is missing: install a Rust toolchain (1.85 or newer) with rustup" >&2
  exit 1
fi
if [ "$purpose" = test ]; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      rustup component add "$component"
    fi
  done
  # The python `kubernetes` client (PyPI) for the API server tests, in a venv of its own so
  # that it leaves the machine's Python packages as they are.
  venv=/var/cache/capstan-py
  if ! "$venv/bin/python" -c 'import kubernetes' 2>/dev/null; then
    echo "hack/deps.sh: installing the python kubernetes client into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes
  fi
  if ! command -v cargo-nextest >/dev/null; then
    cargo install --locked cargo-nextest
  fi
  # Not a Debian package: the machine image's Cloud SDK `kubectl` package brings kubectl and
  # the versioned clients (kubectl.1.27, ...) the streaming tests drive.
  if ! command -v kubectl >/dev/null; then
    echo "hack/deps.sh: warning: kubectl is missing; tests/cri_streaming.rs will fail" >&2
  fi
fi
