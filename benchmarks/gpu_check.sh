#!/usr/bin/env bash
# The prepared GPU check: run it in one go on a machine with a GPU (the
# device tool), from the repository root, with the venv made by
# scripts/install.sh (`pip install -e '.[gpu]'` adds CUDA):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# It times the learned-prior posterior at the demo setting (128², 0.8 arcmin)
# and on 360² maps of the same pixels, 40 samples of the default schedule
# (30 levels x 3 leapfrog, 92 score evaluations per sample), with XLA off
# (tf.function graph) and on: the first call (trace + compile + sampling)
# and four later calls on new data (sampling alone); then the samples
# against the exact Gaussian posterior, on the GPU (XLA on and off) and on
# the CPU (benchmarks/gpu_samples_check.py). Then a survey of 10 tiles
# (a 9 deg² synthetic box at NSIDE 1024, made on the spot) mapped with KS,
# Wiener and the posterior (40 samples per tile, one worker): tiles per hour
# on the GPU (skipped with GPU_CHECK_SURVEY=0, for a machine without the
# survey packages). The rows go to OUT_DIR/gpu_posterior.json and
# OUT_DIR/survey/summary.json, the log to OUT_DIR/gpu_check.log; copy them
# into docs/benchmarks.md with the machine and the date. PYTHON names the
# interpreter (default: .venv/bin/python, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c 'import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices("GPU"))'
  "$PY" benchmarks/bench_sampler_retrace.py \
    --configs=learned:128:xla,learned:128:graph,learned:360:xla,learned:360:graph \
    --num_samples=40 --num_levels=30 --calls=5 --fresh_calls=0 \
    --output="$OUT/gpu_posterior.json"
  "$PY" benchmarks/gpu_samples_check.py
  CUDA_VISIBLE_DEVICES= "$PY" benchmarks/gpu_samples_check.py
  date -u
  [ "${GPU_CHECK_SURVEY:-1}" = 0 ] && exit 0
  "$PY" benchmarks/make_synthetic_survey.py --box=30,33,-1.5,1.5 --nside=1024 \
    --output_dir="$OUT/synthetic" --overwrite
  "$PY" examples/map_survey.py --catalog="$OUT/synthetic/catalog.parquet" \
    --truth="$OUT/synthetic/kappa.fits" --nside=1024 \
    --estimators=ks,wiener,posterior --num_samples=40 --workers=1 \
    --output_dir="$OUT/survey" --overwrite --noresume
  cat "$OUT/survey/summary.json"
  date -u
} 2>&1 | tee "$OUT/gpu_check.log"
