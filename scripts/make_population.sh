#!/usr/bin/env bash
# A population generator for `dopplergen evaluate --fewshot --population-pipeline runs/population/pipeline`:
# 20 simulated users disjoint from data/sim10 (simulate seed 1, other user profiles), built by the same function
# and with the same budget as `evaluate --fewshot` builds its own (training/eval/population.py: the preset's
# stage-1 steps, 3000 UNet steps for the demo preset). Every stage resumes where it stopped; about 2-3 h on
# 2 shared CPU cores.
#   bash scripts/make_population.sh [--out runs/population] [--seed 1] [--route kl] [--cover-conditions]
# --cover-conditions simulates the population as data/sim10c was (aspect 0-70 deg both sides, 0.7-1.3x speeds);
# `evaluate --fewshot` without --population-pipeline does this by itself when the evaluated data was made so.
# checkpoints/demo/report.md's small-k rows were measured with an earlier hand-written recipe (800 VAE steps,
# UNet 1000 steps continued to 3000; commit c042ffe), before this script and the evaluator shared one recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" -m training.eval.population --out "${RUNS:-runs}/population" "$@"
