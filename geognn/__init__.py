"""geognn: equivariant 3D graph neural networks for molecules and materials."""

__version__ = "0.1.0"


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero on CPU (see `geognn._subnormals`): what the ``geognn``
    command, the calculator and `geognn.training.fit` do; call it once when using models from
    your own code. ``GEOGNN_FLUSH_SUBNORMALS=0`` opts out. Returns whether flushing is on."""
    from geognn._subnormals import flush_subnormals as flush

    return flush()
