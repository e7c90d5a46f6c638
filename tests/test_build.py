"""The install builds the model's library with the system's C++ compiler; without one it says what to install."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_without_a_compiler_the_build_stops_with_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)  # a PATH with Python and no compiler at all
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(bin_dir)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a C++ compiler" in lines[0] and "apt install g++" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_the_library_loaded_here_is_this_checkouts_build():
    from lowlight_gpu.synth import native

    native.lib()
    assert native.level() in (0, 3, 4)
    assert Path(native._built("")).parent == REPO / "lowlight_gpu" / "synth"
