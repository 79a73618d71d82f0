#!/usr/bin/env bash
# Download, here, the pure-Python wheels the lent GPU machine lacks (it has torch, accelerate, safetensors,
# numpy, scipy, httpx, prometheus-client, but no package index), into .whl/ for `benchmarks/gpu_check.sh`.
# The device tool carries .whl/ when asked (carry: [".whl"]). Python 3.12 on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
# fastapi >= 0.165 imports opentelemetry at start-up: without opentelemetry-api the server does not start.
for p in diffusers fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv uvicorn \
         annotated-types typing-inspection annotated-doc importlib-metadata opentelemetry-api; do
  # Same versions as the local venv where it has them (what the tests ran with), else the newest.
  v=""
  if [ -x .venv/bin/python ]; then
    v=$(.venv/bin/python -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}' || true)
  fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$p${v:+==$v}"
done
ls .whl
