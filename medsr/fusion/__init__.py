"""Fusion of several thick-slice stacks of one subject into one isotropic volume."""
