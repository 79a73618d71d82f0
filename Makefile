# dopplergen: every set-up step lives here, so a fresh clone needs only Python 3.10+ and the package registries.
#   make serve   - create .venv, install (CPU torch pin), serve the shipped demo checkpoint on :8000
#   make test    - create .venv, install, run the whole test suite (what CI runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU installs pin torch to the local CPU wheel; on a CUDA host use `make serve CONSTRAINTS=` to get the CUDA build.
CONSTRAINTS ?= constraints-cpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
HOST ?= 127.0.0.1
PORT ?= 8000
PIPELINE ?= checkpoints/demo
DATA ?= data/sim10act
export HF_HUB_OFFLINE := 1

.PHONY: install serve test test-fast lint lock bench demo-checkpoint demo-report simulate evaluate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_C) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(BIN)/dopplergen serve --pipeline $(PIPELINE) --host $(HOST) --port $(PORT)

# The whole suite, slow end-to-end tests included. pytest exits 5 when it collects nothing, which fails here.
test: export OMP_NUM_THREADS ?= 1
test: install
	bash scripts/install_prometheus.sh || echo "warning: could not install prometheus; its test will say why"
	bash scripts/install_chromium.sh || echo "warning: could not install chromium; the browser test (tests/e2e/test_web.py) will say why"
	$(BIN)/python -m pytest -q --timeout=600 tests

test-fast: export OMP_NUM_THREADS ?= 1
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: install
	$(BIN)/ruff check models training service tests benchmarks experiments

# Re-lock the Docker image's dependencies (requirements/*.txt, hashes) after a change to pyproject.toml.
lock: install
	$(BIN)/python -m pip install -q 'uv>=0.5'
	UV="$(BIN)/python -m uv" PYTHON=$(BIN)/python sh scripts/lock.sh

simulate: install
	$(BIN)/dopplergen simulate --cover-conditions --activities walk,run,limp,carry,sit,stand,fall,pickup \
		--per-user 240 --out $(DATA)

demo-checkpoint: install
	bash scripts/make_demo_checkpoint.sh

evaluate: install
	$(BIN)/dopplergen evaluate --pipeline $(PIPELINE) --data $(DATA) --out out/report

# The shipped demo's report: its data, six walkers it never saw (few-shot and the alternatives on them); ~37 min.
TARGETS ?= data/targets-new6
OTHER ?= data/other
ADAPTED ?= out/demo-other
demo-report: install
	test -f $(DATA)/manifest.csv || $(MAKE) simulate
	test -f $(TARGETS)/manifest.csv || $(BIN)/dopplergen simulate --cover-conditions --users 6 --per-user 120 \
		--seed 7 --out $(TARGETS)
	test -f $(OTHER)/targets/manifest.csv || $(BIN)/python -m experiments.other_radar --out $(OTHER)
	test -f $(ADAPTED)/dopplergen.json || $(BIN)/dopplergen adapt --pipeline checkpoints/demo \
		--data $(OTHER)/adapt --out $(ADAPTED)
	$(BIN)/dopplergen evaluate --pipeline checkpoints/demo --data $(DATA) --fewshot --targets $(TARGETS) \
		--baselines --ood-targets $(OTHER)/targets --adapted $(ADAPTED) --no-sweep \
		--out checkpoints/demo/report --markdown checkpoints/demo/report.md

bench: install
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/serve_load.py

clean:
	rm -rf $(VENV) .pytest_cache out
