"""The Gaussian scene (``GaussianScene``: raw parameters in gsplat's layout) and the real SH basis."""

from splatdistill.scene.gaussians import GaussianScene, num_sh_coeffs, sh_degree_from_coeffs

__all__ = ["GaussianScene", "sh_degree_from_coeffs", "num_sh_coeffs"]
