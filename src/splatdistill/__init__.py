"""splatdistill: make 3D Gaussian Splatting scenes small and fast without losing quality."""

__version__ = "0.1.0"
