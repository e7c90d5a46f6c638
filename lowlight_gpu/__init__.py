"""lowlight_gpu: reproducible synthetic low-light pair datasets."""

__version__ = "0.1.0"
