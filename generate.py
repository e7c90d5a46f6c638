#!/usr/bin/env python3
"""Generate a synthetic low-light pair dataset from config.yaml (see --help)."""

from lowlight_gpu.cli import command

if __name__ == "__main__":
    raise SystemExit(command())
