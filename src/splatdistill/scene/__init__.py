"""The Gaussian scene (``GaussianScene``: raw parameters in gsplat's layout) and the real SH basis."""

from splatdistill.scene.gaussians import GaussianScene, sh_degree_from_coeffs, num_sh_coeffs

__all__ = ["GaussianScene", "sh_degree_from_coeffs", "num_sh_coeffs"]
