# syntax=docker/dockerfile:1
# dopplergen service + training image.
#
# One copy of CUDA: the base is plain python:3.11-slim (no CUDA toolkit) and torch's own pip wheels
# bring the CUDA runtime libraries. The default index is PyPI, whose Linux x86_64 torch wheels are
# CUDA builds; pick a specific CUDA build with e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# and a CPU-only image (a few hundred MB instead of several GB) with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (docker-compose.cpu.yml does the latter).

FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Caches in /tmp: writable whatever user or read-only root filesystem the container runs with.
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HOME=/tmp/huggingface

WORKDIR /app

# --- dependency layer: rebuilt only when pyproject.toml changes ---------------------------------
# The requirement list is read from pyproject.toml (the single source of truth); torch is installed
# first from TORCH_INDEX_URL, then the rest from PyPI, which finds torch already satisfied.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && grep -E '^torch([<>=!~ ]|$)' /tmp/requirements.txt > /tmp/torch.txt \
 && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/torch.txt

# --- code layer: cheap to rebuild ---------------------------------------------------------------
# README* may be absent; pyproject.toml is listed too so the wildcard never matches nothing.
COPY pyproject.toml README* ./
COPY models ./models
COPY training ./training
COPY service ./service
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /checkpoints /data /runs \
 && chown app:app /checkpoints /data /runs

# The shipped demo pipeline. /checkpoints is a volume in docker-compose.yml: an empty named volume is
# seeded from here on first use, and a bind mount or the train job's output replaces it.
COPY --chown=app:app checkpoints/demo /checkpoints/demo
COPY --chown=app:app deploy/train.sh /app/deploy/train.sh

USER app

ENV DOPPLERGEN_PIPELINE=/checkpoints/demo \
    DOPPLERGEN_HOST=0.0.0.0 \
    DOPPLERGEN_PORT=8000

EXPOSE 8000

# Healthy = model loaded and warmed up (/readyz answers 200). urllib raises on any non-2xx status.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DOPPLERGEN_PORT', '8000'), timeout=4)" || exit 1

CMD ["dopplergen", "serve"]
