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
# -ffp-contract=off and no -ffast-math: the bytes must not depend on the compiler or the CPU (ARCHITECTURE.md);
# -fno-math-errno and -fno-trapping-math change no value (no errno is set, no trap is enabled): they let sqrt
# and floor become vector instructions; -fno-semantic-interposition lets the exported functions' callees inline.
FLAGS = ["-x", "c++", "-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-exceptions", "-fno-rtti",
         "-fPIC", "-shared", "-fvisibility=hidden"]
SPEED_FLAGS = ["-fno-math-errno", "-fno-trapping-math", "-fno-semantic-interposition"]  # left out where refused
NO_COMPILER = ("lowlight-gpu needs a C++ compiler to build its model library and found none: install gcc with g++ "
               "or clang (Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; macOS: xcode-select --install) "
               "or set CXX to one")


def compilers():
    """C++ compilers to try, the user's choice ($CXX) first."""
    # gcc and clang compile C++ too (-x c++); the library needs no C++ runtime (no exceptions, RTTI or STL).
    names = [os.environ.get("CXX", ""), "c++", "g++", "clang++", "clang", "gcc", "cc"]
    seen = []
    for name in names:
        path = shutil.which(name.split()[0]) if name.strip() else None
        if path and path not in seen:
            seen.append(path)
    return seen


# x86-64 builds: (file-name suffix, flags); native.py loads the widest one the CPU runs (ll_cpu_level).
LEVELS = [("", []), ("_v3", ["-march=x86-64-v3"]), ("_v4", ["-march=x86-64-v4"])]


def is_x86_64():
    """Whether the compiler targets x86-64 (the levels apply only there)."""
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")


def compile_once(cxx, source, target, extra):
    """One compiler call into target; returns the compiler's last line of complaint, or None on success."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, os.path.basename(target))
        cmd = [cxx, *FLAGS, *extra, "-I", os.path.dirname(source), source, "-o", out]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            return (run.stderr.strip().splitlines() or ["failed"])[-1]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(out, target)
        return None


def compile_library(source, target, flags):
    """Compile source with flags into the shared library target; raises CompileError with one line on failure.

    A level build the compiler cannot make (an old compiler without -march=x86-64-v4) falls back to the
    baseline flags, so every listed library exists; so does a compiler that refuses a flag of SPEED_FLAGS
    (none of them changes a value).
    """
    found = compilers()
    if not found:
        raise CompileError(NO_COMPILER)
    errors = []
    for cxx in found:
        for extra in ([flags + SPEED_FLAGS, flags, SPEED_FLAGS, []] if flags else [SPEED_FLAGS, []]):
            problem = compile_once(cxx, source, target, extra)
            if problem is None:
                return
            errors.append(f"{os.path.basename(cxx)}: {problem}")
    raise CompileError(f"lowlight-gpu could not compile its model library ({'; '.join(errors[-2:])}); "
                       f"a C++17 compiler is needed (g++ >= 8 or clang++ >= 7)")


class BuildModel(build_ext):
    """build_ext for a plain shared library: one compiler call, its output kept quiet unless it fails."""

    def build_extension(self, ext):
        try:
            flags = dict(LEVELS)[ext.name[len(NAME):]]
            compile_library(os.path.join(HERE, ext.sources[0]), self.get_ext_fullpath(ext.name), flags)
        except CompileError as exc:
            sys.stderr.write(f"error: {exc}\n")
            raise SystemExit(1) from None


# Without a compiler, stop before setuptools says anything: the one line that names what to install is then
# all pip shows (a source distribution needs no compiler).
if not compilers() and "sdist" not in sys.argv:
    sys.stderr.write(f"error: {NO_COMPILER}\n")
    raise SystemExit(1)

NAME = "lowlight_gpu.synth._model"
HEADERS = [os.path.join(SYNTH, n) for n in ("philox.cuh", "detmath.cuh", "noise.cuh", "physics.cuh")]
setup(
    ext_modules=[Extension(NAME + suffix, sources=[os.path.join(SYNTH, "native.cpp")], depends=HEADERS)
                 for suffix, _ in (LEVELS if is_x86_64() else LEVELS[:1])],
    cmdclass={"build_ext": BuildModel},
)
