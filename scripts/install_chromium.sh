#!/bin/sh
# Install Debian's Chromium (and chromium-driver) for the browser test of the web page
# (tests/e2e/test_web.py drives /usr/bin/chromium through Playwright) and for CI.
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (or sudo).
set -eu

if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install_chromium.sh: need root or sudo to apt-get install chromium" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium.sh: apt-get not found (not a Debian/Ubuntu machine)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Try the cached package lists first; refresh them only if that fails (fresh machines have none).
if ! $SUDO apt-get install -y --no-install-recommends chromium chromium-driver; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium chromium-driver
fi

/usr/bin/chromium --version 2>/dev/null | head -n 1
