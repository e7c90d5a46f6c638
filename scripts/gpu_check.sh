#!/usr/bin/env bash
# GPU acceptance check of the CuPy backend, from a source checkout on a GPU machine.
#
#   bash scripts/gpu_check.sh OUTDIR [SECTION ...]
#
# SECTION: kernels (pytest of the CUDA tests + scripts/gpu_check.py), and the codec
# sections of scripts/gpu_codec_check.py: small (960 x 768x512: numpy vs cupy, CPU and
# GPU decoding, vs the Pillow and fast floors), large (24 x 12 MP), progressive (T=10,
# all steps saved), workers (1 vs 16 workers, threads / processes / encode-pool).
# Default: all of them, in that order of importance: kernels, small, progressive, workers,
# large.  The whole call keeps within GPU_CHECK_BUDGET_S seconds (default 540, for a machine
# lent 10 minutes a call): each section's timeout is cut to what is left, and a section
# with less than a minute left is skipped and says so; the sections already run keep
# their results.  Unbudgeted, all of them take about 9-12 minutes.
#
# Needs no network: the checkout goes on PYTHONPATH and the machine's own python3
# (with numpy, Pillow, PyYAML, pytest and CuPy) runs it.  fpng and nvImageCodec are
# installed from wheels in .whl/ at the repository root when it is there (carry it
# along); fill it on a machine with network, for the GPU machine's Python, with e.g.
#   pip download fpng 'nvidia-nvimgcodec-cu13[all]' -d .whl --only-binary=:all: \
#       --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64
# (cu12 instead of cu13 for a CUDA 12 driver).
# Writes OUTDIR/pytest.log (nvidia-smi, versions, the CUDA test files),
# OUTDIR/golden.log (tests/test_golden.py --check --backend cupy and tests/model_cases.py --check
# --backend cupy: the kernels reproduce the pinned outputs of every model, physics included),
# OUTDIR/gpu_check.json and OUTDIR/gpu_check.log (summary), and OUTDIR/codec_SECTION.{json,log}.
# The model's CPU library is built here first (the checkout carries its sources, not the build).
set -uo pipefail

OUTDIR=${1:?usage: scripts/gpu_check.sh OUTDIR [kernels small large progressive workers]}
shift
SECTIONS=${*:-kernels small large progressive workers}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)  # absolute, before moving to the repository root
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LOG="$OUTDIR/pytest.log"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
BUDGET=${GPU_CHECK_BUDGET_S:-540}
SKIPPED=""
# left NOMINAL: the timeout for the next step, NOMINAL cut to the budget that is left (0: skip it).
left() {
    local rest=$((BUDGET - SECONDS - 10))
    if [ "$rest" -lt 60 ]; then echo 0; elif [ "$rest" -lt "$1" ]; then echo "$rest"; else echo "$1"; fi
}
# step NOMINAL NAME: sets LIMIT for the next step, or (nothing left) notes NAME as skipped and fails.
step() {
    LIMIT=$(left "$1")
    [ "$LIMIT" -gt 0 ] && return 0
    SKIPPED="$SKIPPED $2"
    echo "$2: skipped, the budget of ${BUDGET}s is spent (run it alone: $0 OUTDIR ...)"
    return 1
}

# Wheels carried in .whl/ (no network here): fpng, then nvImageCodec for the driver's CUDA major version.
if [ -d .whl ]; then
    {
        echo "== install from .whl/"
        timeout 120 "$PY" -m pip install --no-index --find-links .whl --quiet fpng || echo "fpng: not installed"
        CUDA_MAJOR=$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
        for cu in "cu${CUDA_MAJOR:-13}" cu13 cu12; do
            timeout 180 "$PY" -m pip install --no-index --find-links .whl --quiet "nvidia-nvimgcodec-$cu[all]" \
                && break
            timeout 120 "$PY" -m pip install --no-index --find-links .whl --quiet "nvidia-nvimgcodec-$cu" && break
        done
        timeout 60 "$PY" -c 'import fpng; print("fpng", fpng.__version__)' || echo "fpng import failed"
        timeout 60 "$PY" -c 'from nvidia import nvimgcodec; print("nvimgcodec", nvimgcodec.__version__)' \
            || echo "nvimgcodec import failed"
    } >"$OUTDIR/install.log" 2>&1
    tail -2 "$OUTDIR/install.log"
fi

# The model's CPU library (the CPU side of every comparison): built in place from the checkout's sources.
if ! "$PY" -c 'from lowlight_gpu.synth import native; native.lib()' >/dev/null 2>&1; then
    timeout 120 "$PY" setup.py -q build_ext --inplace >"$OUTDIR/build.log" 2>&1 || echo "build of the model library failed"
fi

PYTEST_RC=0
CHECK_RC=0
GOLDEN_RC=0
if want kernels; then
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

PYTEST_RC=124
if step 300 pytest; then
    timeout "$LIMIT" "$PY" -m pytest -q -rs -s tests/test_cupy_backend.py tests/test_cuda_sources.py \
        tests/test_physics_cuda.py tests/test_model.py >>"$LOG" 2>&1
    PYTEST_RC=$?
fi
echo "== pytest exit code $PYTEST_RC" >>"$LOG"
tail -3 "$LOG"

# The real kernels against the golden pins (ARCHITECTURE.md, "Reproducibility"): every output identical.
GOLDEN_RC=124
if step 120 golden; then
    timeout "$LIMIT" "$PY" tests/test_golden.py --check --backend cupy 2>&1 | tee "$OUTDIR/golden.log"
    GOLDEN_RC=${PIPESTATUS[0]}
    timeout "$LIMIT" "$PY" tests/model_cases.py --check --backend cupy 2>&1 | tail -5 | tee -a "$OUTDIR/golden.log"
    [ "${PIPESTATUS[0]}" -ne 0 ] && GOLDEN_RC=1
fi

CHECK_RC=124
if step 240 gpu_check; then
    timeout "$LIMIT" "$PY" scripts/gpu_check.py "$OUTDIR" --pytest-rc "$PYTEST_RC" 2>&1 | tee "$OUTDIR/gpu_check.log"
    CHECK_RC=${PIPESTATUS[0]}
fi
fi

# Codec sections: each its own process and timeout, so one that hangs or fails leaves the others' results.
CODEC_RC=0
for section in small progressive workers large; do
    want "$section" || continue
    case $section in small) nominal=240 ;; large) nominal=200 ;; progressive) nominal=120 ;; *) nominal=200 ;; esac
    if ! step "$nominal" "$section" >"$OUTDIR/codec_$section.log"; then
        cat "$OUTDIR/codec_$section.log"
        CODEC_RC=124
        continue
    fi
    timeout "$LIMIT" "$PY" scripts/gpu_codec_check.py "$OUTDIR" "$section" ${CODEC_ARGS:-} 2>&1 \
        | tee "$OUTDIR/codec_$section.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && echo "codec $section: timed out after ${LIMIT}s" | tee -a "$OUTDIR/codec_$section.log"
    [ "$rc" -ne 0 ] && CODEC_RC=$rc
done

echo "results in $OUTDIR: pytest rc $PYTEST_RC, golden rc $GOLDEN_RC, gpu_check rc $CHECK_RC, codec rc $CODEC_RC;" \
     "${SECONDS}s of a ${BUDGET}s budget${SKIPPED:+; skipped:$SKIPPED}"
[ "$PYTEST_RC" -eq 0 ] && [ "$GOLDEN_RC" -eq 0 ] && [ "$CHECK_RC" -eq 0 ] && [ "$CODEC_RC" -eq 0 ]
