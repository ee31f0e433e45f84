"""Data entry points and the tensor-name conventions (`geognn.data.keys`)."""

from geognn.data import keys
from geognn.data.atoms import MAX_ATOMIC_NUMBER, atoms_to_data

__all__ = ["keys", "atoms_to_data", "MAX_ATOMIC_NUMBER"]
