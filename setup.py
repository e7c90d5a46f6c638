"""Builds the model's CPU library (lowlight_gpu/synth/native.cpp) at install; everything else is in pyproject.toml.

The library is plain C++ with no Python C API, loaded with ctypes (lowlight_gpu/synth/native.py), so one
build serves every Python version.  It needs a C++ compiler (g++ or clang++); without one the install
stops with one line that says what to install.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

HERE = os.path.dirname(os.path.abspath(__file__))
SYNTH = os.path.join("lowlight_gpu", "synth")
# -ffp-contract=off and no -ffast-math: the bytes must not depend on the compiler or the CPU (ARCHITECTURE.md).
FLAGS = ["-x", "c++", "-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-exceptions", "-fno-rtti",
         "-fPIC", "-shared", "-fvisibility=hidden"]
NO_COMPILER = ("lowlight-gpu needs a C++ compiler to build its model library and found none: install g++ "
               "(Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; macOS: xcode-select --install) "
               "or set CXX to one")


def compilers():
    """C++ compilers to try, the user's choice ($CXX) first."""
    names = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    seen = []
    for name in names:
        path = shutil.which(name.split()[0]) if name.strip() else None
        if path and path not in seen:
            seen.append(path)
    return seen


def compile_library(source, target):
    """Compile source into the shared library target; raises CompileError with one line on failure."""
    found = compilers()
    if not found:
        raise CompileError(NO_COMPILER)
    include = os.path.dirname(source)
    errors = []
    for cxx in found:
        # Function multi-versioning (AVX-512/AVX2 clones) where the compiler has it; a plain build otherwise.
        for extra in ([], ["-DLL_NO_CLONES"]):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, os.path.basename(target))
                cmd = [cxx, *FLAGS, *extra, "-I", include, source, "-o", out]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode == 0:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(out, target)
                    return
                errors.append(f"{os.path.basename(cxx)}: {(run.stderr.strip().splitlines() or ['failed'])[-1]}")
    raise CompileError(f"lowlight-gpu could not compile its model library ({'; '.join(errors[-2:])}); "
                       f"a C++17 compiler is needed (g++ >= 8 or clang++ >= 7)")


class BuildModel(build_ext):
    """build_ext for a plain shared library: one compiler call, its output kept quiet unless it fails."""

    def build_extension(self, ext):
        try:
            compile_library(os.path.join(HERE, ext.sources[0]), self.get_ext_fullpath(ext.name))
        except CompileError as exc:
            sys.stderr.write(f"error: {exc}\n")
            raise SystemExit(1) from None


setup(
    ext_modules=[Extension("lowlight_gpu.synth._model", sources=[os.path.join(SYNTH, "native.cpp")],
                           depends=[os.path.join(SYNTH, n) for n in ("philox.cuh", "detmath.cuh", "noise.cuh",
                                                                     "physics.cuh")])],
    cmdclass={"build_ext": BuildModel},
)
