# syntax=docker/dockerfile:1
# dopplergen images: the serving image (default) and, with --build-arg DEPS=train, the training image.
#
# Dependencies come from hash-locked files (requirements/*.txt, written by scripts/lock.sh from
# pyproject.toml's ranges, every version the one the test suite ran with) and are installed with
# --require-hashes --no-deps: nothing unpinned, nothing unchecked, no resolver at build time.
#   DEPS=serve (default)  requirements/serve*.txt: what service/ and models/ import, no training packages
#   DEPS=train            requirements/train*.txt: + accelerate, scipy, torchmetrics, tqdm, pyyaml
# One copy of CUDA: the base is plain python:3.11-slim (no CUDA toolkit); torch's own pip wheels bring the
# CUDA runtime libraries (TORCH=cuda, PyPI's Linux torch build). TORCH=cpu installs the CPU-only torch
# build from the PyTorch CPU index instead, a few hundred MB rather than several GB (docker-compose.cpu.yml).

ARG DEPS=serve

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Caches in /tmp: writable whatever user or read-only root filesystem the container runs with.
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HOME=/tmp/huggingface

WORKDIR /app

# --- dependency layer: rebuilt only when a lock file changes ---------------------------------------
FROM base AS deps
ARG DEPS
ARG TORCH=cuda
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements/ ./requirements/
RUN case "$TORCH" in \
      cuda) lock="requirements/$DEPS.txt"; extra="" ;; \
      cpu) lock="requirements/$DEPS-cpu.txt"; extra="--extra-index-url $TORCH_CPU_INDEX_URL" ;; \
      *) echo "TORCH must be cuda or cpu, got '$TORCH'" >&2; exit 2 ;; \
    esac \
 && pip install --require-hashes --no-deps $extra -r "$lock"

# --- code layer: cheap to rebuild ---------------------------------------------------------------
FROM deps AS app
# README* may be absent; pyproject.toml is listed too so the wildcard never matches nothing.
COPY pyproject.toml README* ./
COPY models ./models
COPY training ./training
COPY service ./service
# --no-build-isolation: build with the locked setuptools instead of fetching an unpinned one.
RUN pip install --no-deps --no-build-isolation . \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /checkpoints /data /runs /users \
 && chown app:app /checkpoints /data /runs /users

# The shipped demo pipeline. /checkpoints is a volume in docker-compose.yml: an empty named volume is
# seeded from here on first use, and a bind mount or the train job's output replaces it.
COPY --chown=app:app checkpoints/demo /checkpoints/demo
COPY --chown=app:app deploy/train.sh /app/deploy/train.sh

USER app

# Enrolled people are kept in /users: mount a volume there (compose: `users`) so they outlive the container.
# Owned by app, so an empty named volume mounted there is seeded writable for it.
ENV DOPPLERGEN_PIPELINE=/checkpoints/demo \
    DOPPLERGEN_USERS_DIR=/users \
    DOPPLERGEN_HOST=0.0.0.0 \
    DOPPLERGEN_PORT=8000

EXPOSE 8000

# Healthy = model loaded and warmed up (/readyz answers 200). urllib raises on any non-2xx status.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DOPPLERGEN_PORT', '8000'), timeout=4)" || exit 1

CMD ["dopplergen", "serve"]
