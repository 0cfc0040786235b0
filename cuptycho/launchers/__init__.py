"""Typed launchers of the kernels in kernels/*.cu, one module per kernel file."""
