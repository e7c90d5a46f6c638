#!/usr/bin/env bash
# GPU acceptance check of the CuPy backend, from a source checkout on a GPU machine.
#
#   bash scripts/gpu_check.sh OUTDIR
#
# Needs no network and installs nothing: the checkout goes on PYTHONPATH and the
# machine's own python3 (with numpy, Pillow, PyYAML, pytest and CuPy) runs it.
# Writes OUTDIR/pytest.log (nvidia-smi, versions, the CUDA test files),
# OUTDIR/gpu_check.json and OUTDIR/gpu_check.log (summary).  Typically 1-2 minutes;
# each stage has a hard timeout, so the whole script stays under 8 minutes.
set -uo pipefail

OUTDIR=${1:?usage: scripts/gpu_check.sh OUTDIR}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)  # absolute, before moving to the repository root
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LOG="$OUTDIR/pytest.log"

{
    echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC  $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "== nvidia-smi"
    timeout 30 nvidia-smi || echo "nvidia-smi failed"
    echo "== versions"
    timeout 60 "$PY" -c 'import sys, numpy, cupy; print(sys.version); print("numpy", numpy.__version__, "cupy", cupy.__version__)' \
        || echo "cupy import failed"
    command -v nvcc >/dev/null && nvcc --version | tail -2
    echo "== pytest"
} >"$LOG" 2>&1

timeout 300 "$PY" -m pytest -q -rs -s tests/test_cupy_backend.py tests/test_cuda_sources.py tests/test_physics_cuda.py >>"$LOG" 2>&1
PYTEST_RC=$?
echo "== pytest exit code $PYTEST_RC" >>"$LOG"
tail -3 "$LOG"

timeout 240 "$PY" scripts/gpu_check.py "$OUTDIR" --pytest-rc "$PYTEST_RC" 2>&1 | tee "$OUTDIR/gpu_check.log"
CHECK_RC=${PIPESTATUS[0]}

echo "results in $OUTDIR: pytest rc $PYTEST_RC, gpu_check rc $CHECK_RC"
[ "$PYTEST_RC" -eq 0 ] && [ "$CHECK_RC" -eq 0 ]
