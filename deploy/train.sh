#!/bin/sh
# The compose `train` job: simulate -> train-vae -> train-unet -> evaluate, into the checkpoint volume.
# This is the one place the job's commands live; every knob is an environment variable.
#
# The new pipeline is written next to its final place and moved in only after it trained and was
# evaluated, so a crashed run never leaves a half-written pipeline where the api looks for one.
# The api loads its pipeline at start-up: point it at the output and restart it, e.g.
#   DOPPLERGEN_PIPELINE=/checkpoints/trained docker compose up -d api
set -eu

PRESET="${DOPPLERGEN_TRAIN_PRESET:-demo}"            # model size preset: tiny | demo | base
DATA="${DOPPLERGEN_TRAIN_DATA:-/data/sim}"           # dataset folder; simulated only if it has no manifest
RUNS="${DOPPLERGEN_TRAIN_RUNS:-/runs}"               # resume state and reports (not served)
OUT="${DOPPLERGEN_TRAIN_OUT:-/checkpoints/trained}"  # the exported pipeline the api can serve
# Prefix for the two training stages; multi-GPU e.g. "accelerate launch --num_processes 2 -m training".
LAUNCH="${DOPPLERGEN_TRAIN_LAUNCH:-dopplergen}"
# Extra flags for each stage (e.g. "--max-steps 200"), word-split on purpose.
SIMULATE_ARGS="${DOPPLERGEN_SIMULATE_ARGS:-}"
VAE_ARGS="${DOPPLERGEN_TRAIN_VAE_ARGS:-}"
UNET_ARGS="${DOPPLERGEN_TRAIN_UNET_ARGS:-}"

STAGING="${OUT}.partial"
mkdir -p "$RUNS" "$(dirname "$OUT")"

if [ -f "$DATA/manifest.csv" ]; then
  echo "[train.sh] using existing dataset $DATA"
else
  echo "[train.sh] simulating dataset into $DATA"
  # shellcheck disable=SC2086
  dopplergen simulate --out "$DATA" $SIMULATE_ARGS
fi

# Both stages resume from their newest checkpoint in $RUNS, so re-running the job after a crash
# continues instead of starting over.
echo "[train.sh] stage 1: VAE ($PRESET) -> $RUNS/vae"
# shellcheck disable=SC2086
$LAUNCH train-vae --preset "$PRESET" --data "$DATA" --out "$RUNS/vae" --resume latest $VAE_ARGS

echo "[train.sh] stage 2: UNet ($PRESET) -> $STAGING"
rm -rf "$STAGING"
# shellcheck disable=SC2086
$LAUNCH train-unet --preset "$PRESET" --data "$DATA" --vae "$RUNS/vae/vae" --out "$STAGING" \
  --run-dir "$RUNS/unet" --resume latest $UNET_ARGS

echo "[train.sh] evaluating -> $RUNS/eval"
dopplergen evaluate --pipeline "$STAGING" --data "$DATA" --out "$RUNS/eval"

# Swap in: keep the previous pipeline as $OUT.prev for a quick rollback.
rm -rf "${OUT}.prev"
if [ -e "$OUT" ]; then mv "$OUT" "${OUT}.prev"; fi
mv "$STAGING" "$OUT"
echo "[train.sh] done: pipeline at $OUT (serve it with DOPPLERGEN_PIPELINE=$OUT)"
