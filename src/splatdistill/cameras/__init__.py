"""Cameras: the one pinhole ``Camera`` type, camera batches for the renderers, and generated views
(pseudo, interpolated, orbit, sphere)."""
