#!/bin/sh
# Install Debian packages for the test set-up: `sh scripts/apt_install.sh PKG...`.
# Shared by install_prometheus.sh and install_chromium.sh. Needs root (or passwordless sudo) and apt-get.
set -eu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "apt_install.sh: need root or sudo to apt-get install $*" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt_install.sh: apt-get not found (not a Debian/Ubuntu machine)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Try the cached package lists first; refresh them only if that fails (fresh machines have none).
if ! $SUDO apt-get install -y --no-install-recommends "$@"; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "$@"
fi
