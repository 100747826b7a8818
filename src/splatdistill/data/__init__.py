"""Datasets and cameras."""
