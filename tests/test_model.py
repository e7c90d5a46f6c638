"""The one case table (tests/model_cases.py), run by every implementation of the model present here.

* the CPU library (``synth/native.cpp`` over the headers): the CPU backend's drivers;
* the GPU kernels' bodies (one CUDA thread's work, looped) through the CuPy backend's own driver on a
  stand-in CuPy (tests/test_cuda_sources.py), so the driver's packing, slicing and batching are run too;
* CuPy on a real GPU, when one is present.

All of them must give the pinned bytes.  The records the Python side hands to C are checked against the
C layouts, and the model codes, component flags and streams against the C constants.
"""

import numpy as np
import pytest

import model_cases
from lowlight_gpu.synth import cupy_backend, native, numpy_backend, records


def test_the_pins_are_for_this_format_version():
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    assert model_cases.PINNED_FORMAT_VERSION == FORMAT_VERSION
    assert len(model_cases.PINS) > 1000


def test_cpu_library():
    problems = model_cases.compare(model_cases.digests(numpy_backend), model_cases.PINS)
    assert not problems, "\n".join(problems[:20])


def test_gpu_kernel_bodies_through_the_cupy_driver(stand_in):
    got = model_cases.render_digests(cupy_backend)
    problems = model_cases.compare(got, model_cases.PINS, partial=True)
    assert not problems, "\n".join(problems[:20])
    assert len(got) == len([k for k in model_cases.PINS if not k.startswith("primitive/")])


def test_cupy_on_a_gpu():
    ok, reason = cupy_backend.available()
    if not ok:
        pytest.skip(f"no working GPU: {reason}")
    got = model_cases.render_digests(cupy_backend)
    problems = model_cases.compare(got, model_cases.PINS, partial=True)
    assert not problems, "\n".join(problems[:20])


def test_each_instruction_set_build_of_the_library(tmp_path):
    """The baseline and AVX2 builds render the whole table to the same pins (LOWLIGHT_CPU_LEVEL caps the build)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(model_cases.__file__)
    for level in ("0", "3"):
        env = {**os.environ, "LOWLIGHT_CPU_LEVEL": level}
        proc = subprocess.run([sys.executable, str(script), "--print"], env=env, capture_output=True, text=True,
                              timeout=300, cwd=script.parent.parent)
        assert proc.returncode == 0, proc.stderr
        problems = model_cases.compare(json.loads(proc.stdout), model_cases.PINS)
        assert not problems, f"LOWLIGHT_CPU_LEVEL={level}:\n" + "\n".join(problems[:20])


# ---------------------------------------------------------------- one table of codes, flags and layouts

@pytest.mark.parametrize("which,dtype", [("noise", native.NOISE_PARAMS_DTYPE), ("physics", native.PHYS_PARAMS_DTYPE)])
def test_records_have_the_c_layouts(which, dtype):
    size, offsets = native.record_layout(which)
    assert dtype.itemsize == size
    assert [dtype.fields[name][1] for name in dtype.names] == offsets


def test_the_cupy_job_table_has_the_c_layout():
    size, offsets = native.record_layout("job")
    dtype = cupy_backend.JOB_DTYPE  # ll_job, with its ll_noise_params flattened in place
    assert dtype.itemsize == size and [dtype.fields[name][1] for name in dtype.names] == offsets


def test_model_codes_flags_and_streams_are_the_c_constants():
    c = native.constants()
    assert [native.MODEL_POISSON_READ, native.MODEL_POISSON, native.MODEL_GAUSSIAN] == c[:3]
    assert [native.PHYS_FLAGS[k] for k in "ptgrqc"] == c[3:9]
    assert [native.STREAMS[k] for k in ("params", "noise", "physics sites", "physics rows")] == c[9:13]
    assert {native.MODEL_CODES[m] for m in ("poisson-gaussian", "brooks")} == {native.MODEL_POISSON_READ}


def test_records_carry_the_params():
    params = model_cases.case_params("before-linear", (5, 7), 3)
    rec = records.noise_record(params, None)[0]
    assert rec["model"] == native.MODEL_POISSON_READ and rec["darken"] == 1 and rec["linear"] == 1
    assert rec["inv_peak"] == np.float32(1.0 / params["noise"]["peak"])
    phys = records.physics_record(model_cases.case_params("physics-sony-pgrqc", (5, 7), 3), None, (5, 7, 3))[0]
    assert phys["flags"] == sum(native.PHYS_FLAGS[k] for k in "pgrqc")
    assert (phys["height"], phys["width"], phys["raw_height"], phys["raw_width"]) == (5, 7, 4, 6)
