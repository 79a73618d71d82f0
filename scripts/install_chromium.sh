#!/bin/sh
# Install Debian's Chromium (and chromium-driver) for the browser test of the web page
# (tests/e2e/test_web.py drives /usr/bin/chromium through Playwright) and for CI.
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (or sudo).
set -eu

if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
  exit 0
fi

sh "$(dirname "$0")/apt_install.sh" chromium chromium-driver

/usr/bin/chromium --version 2>/dev/null | head -n 1
