"""Rendering backends behind one ``render()`` entry point."""

from splatdistill.render.api import RenderOutput, render

__all__ = ["render", "RenderOutput"]
