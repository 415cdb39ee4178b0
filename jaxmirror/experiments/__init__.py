"""Experiments: each module returns its data and draws its figures, using the public API."""
