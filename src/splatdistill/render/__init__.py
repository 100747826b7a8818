"""Rendering backends behind one ``render()`` entry point."""

from .api import RenderOutput, render

__all__ = ["render", "RenderOutput"]
