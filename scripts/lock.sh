#!/bin/sh
# Regenerate requirements/*.txt, the Docker image's pinned dependency closures with hashes
# (Linux x86_64, CPython 3.11 = the image's python:3.11-slim), from pyproject.toml's ranges:
#   serve.txt      [project] dependencies, torch from PyPI (its Linux wheels are CUDA builds)   - the default image
#   serve-cpu.txt  the same with torch's CPU-only build (docker-compose.cpu.yml)
#   train.txt      + the `train` extra, CUDA torch   - the compose train job's image
#   train-cpu.txt  + the `train` extra, CPU torch
# Every version is constrained to the one installed in .venv, i.e. what `make test` ran with.
# The CPU torch wheel comes from TORCH_CPU_FIND_LINKS (the PyTorch CPU index by default).
# Needs uv (pip install uv). Usage: scripts/lock.sh   (or: make lock)
set -eu
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
PYTHON="${PYTHON:-.venv/bin/python}"
TORCH_CPU_FIND_LINKS="${TORCH_CPU_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}"
TARGET="--python-version 3.11 --python-platform x86_64-manylinux_2_28"

tested=$(mktemp)
trap 'rm -f "$tested" "$tested.cpu"' EXIT
"$PYTHON" -m pip freeze --exclude-editable | grep -v -e '^dopplergen' -e '^-e ' | sed 's/+cpu$//' > "$tested"
sed 's/^torch==\(.*\)$/torch==\1+cpu/' "$tested" > "$tested.cpu"

lock() {  # lock OUT CONSTRAINTS EXTRA-ARGS...
  out=$1; constraints=$2; shift 2
  # shellcheck disable=SC2086
  $UV pip compile pyproject.toml --quiet --generate-hashes $TARGET -c "$constraints" \
    --custom-compile-command "scripts/lock.sh" -o "$out" "$@"
  # the constraints file is temporary: say what it was instead of its path
  sed -i "s|-c $constraints|-c versions installed in .venv (tested)|" "$out"
}

lock requirements/serve.txt "$tested"
lock requirements/train.txt "$tested" --extra train
lock requirements/serve-cpu.txt "$tested.cpu" --find-links "$TORCH_CPU_FIND_LINKS"
lock requirements/train-cpu.txt "$tested.cpu" --find-links "$TORCH_CPU_FIND_LINKS" --extra train
echo "locked: $(ls requirements/*.txt | tr '\n' ' ')"
