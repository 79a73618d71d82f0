#!/bin/sh
# Install the Prometheus server binary from Debian's packages (used by tests/e2e/test_prometheus.py
# and by CI). Idempotent: does nothing when `prometheus` is already on PATH. Needs root (or sudo).
# The package's service is not started here; the test runs its own prometheus on a loopback port.
set -eu

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install_prometheus.sh: need root or sudo to apt-get install prometheus" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_prometheus.sh: apt-get not found (not a Debian/Ubuntu machine)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Try the cached package lists first; refresh them only if that fails (fresh machines have none).
if ! $SUDO apt-get install -y --no-install-recommends prometheus; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends prometheus
fi
# The Debian package may start its own service where an init system runs; the tests don't need it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n 1
