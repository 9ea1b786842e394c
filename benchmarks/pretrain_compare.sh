#!/usr/bin/env bash
# DKM vs KM vs VAE on held-out MiniGrid mazes: same coders, same data, same budget.
# Collects the frames if missing, trains the models with configs/pretrain-mazes.yaml (extra flags
# go to every `pretrain`), then evaluates them side by side ($RUNS/compare/report.json and PNG figures).
# About 35 minutes for the three models on 2 CPU cores.
# Usage:
#   bash benchmarks/pretrain_compare.sh                                    # the config's discretised logistic likelihood
#   RUNS=runs/gaussian bash benchmarks/pretrain_compare.sh --likelihood gaussian
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/episodic-memory}
RUNS=${RUNS:-runs}
MODELS=${MODELS:-"dkm vae km"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f data/mazes/manifest.json ] || "$BIN" collect --out data/mazes --layouts-per-env 150 --seed 0
models=()
for model in $MODELS; do
  "$BIN" pretrain --config configs/pretrain-mazes.yaml --model "$model" --out "$RUNS/pretrain-$model" --evaluate false "$@"
  models+=(--model "$model=$RUNS/pretrain-$model/model.safetensors")
done
"$BIN" evaluate --data data/mazes --out "$RUNS/compare" "${models[@]}"
