"""Datasets (COLMAP, Blender, nerfstudio, the built-in demo scene): cameras with their images."""
