#!/bin/sh
# Install the Prometheus server binary from Debian's packages (used by tests/e2e/test_prometheus.py
# and by CI). Idempotent: does nothing when `prometheus` is already on PATH. Needs root (or sudo).
# The package's service is not started here; the test runs its own prometheus on a loopback port.
set -eu

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

sh "$(dirname "$0")/apt_install.sh" prometheus
# The Debian package may start its own service where an init system runs; the tests don't need it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n 1
