"""Distillation of a compact student from teacher scenes (Distilled-3DGS, ../shared/METHODS.md §1)."""
