#!/usr/bin/env bash
# The GPU check of issue 15 (see benchmarks/gpu_check.py): about 8 minutes on one H200.
#
# Run from the repository root on a machine with a CUDA GPU; figures go to $OUT
# (gpu_check.json, gpu_check.md, nvidia-smi.csv, log.txt). The device machines of this
# workplace lack soundfile and soxr: fetch their wheels here first (Python 3.12, x86-64)
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl soundfile soxr cffi pycparser
#
# and carry .whl; this script installs whatever lies in .whl before it starts.
# Dry run anywhere: DEVICE=cpu ARCH=tiny CLIPS=16 NOTES=8 STUDY=4 FEEDING=64 benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
DEVICE=${DEVICE:-cuda}
if command -v nvidia-smi > /dev/null; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 250 \
        > "$OUT/nvidia-smi.csv" 2>/dev/null &
    SMI=$!
fi
timeout "${LIMIT:-480}" python3 benchmarks/gpu_check.py --out "$OUT" --device "$DEVICE" \
    --arch "${ARCH:-base}" --clips "${CLIPS:-5000}" --notes "${NOTES:-0}" \
    --study-clips "${STUDY:-256}" --feeding-clips "${FEEDING:-5000}" \
    --batch-size "${BATCH:-64}" --workers "${WORKERS:-12}" ${PARTS:+--parts "$PARTS"} \
    2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
exit "$status"
