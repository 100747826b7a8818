"""The Gaussian scene and its file formats."""

from .gaussians import GaussianScene, sh_degree_from_coeffs, num_sh_coeffs

__all__ = ["GaussianScene", "sh_degree_from_coeffs", "num_sh_coeffs"]
