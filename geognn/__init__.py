"""geognn: equivariant 3D graph neural networks for molecules and materials."""

__version__ = "0.1.0"
