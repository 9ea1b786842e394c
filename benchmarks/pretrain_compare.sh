#!/usr/bin/env bash
# DKM vs KM vs VAE on held-out MiniGrid mazes: same coders, same data, same budget.
# Collects the frames if missing, trains the three models with configs/pretrain-mazes.yaml,
# then evaluates them side by side (runs/compare/report.json and PNG figures).
# About 35 minutes on 2 CPU cores. Usage: bash benchmarks/pretrain_compare.sh [extra pretrain flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/episodic-memory}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f data/mazes/manifest.json ] || "$BIN" collect --out data/mazes --layouts-per-env 150 --seed 0
for model in dkm vae km; do
  "$BIN" pretrain --config configs/pretrain-mazes.yaml --model "$model" --out "runs/pretrain-$model" --evaluate false "$@"
done
"$BIN" evaluate --data data/mazes --out runs/compare \
  --model dkm=runs/pretrain-dkm/model.safetensors \
  --model km=runs/pretrain-km/model.safetensors \
  --model vae=runs/pretrain-vae/model.safetensors
