"""Data entry points and the tensor-name conventions (`geognn.data.keys`).

Loaders: `QM9` (qm9pack or the original .xyz files), `ASEDataset` (extxyz,
ASE db, trajectories), `MD17` (MD17 / rMD17 .npz) and `QM9xTB` (QM9 geometries
relabelled with GFN2-xTB energies and forces). Statistics for normalisation
live in `geognn.data.stats`.
"""

from geognn.data import keys
from geognn.data.ase_dataset import ASEDataset, DatasetFormatError
from geognn.data.atoms import MAX_ATOMIC_NUMBER, atoms_to_data
from geognn.data.collated import NAMED_SPLITS, CollatedDataset, random_split_indices
from geognn.data.md17 import MD17
from geognn.data.qm9 import QM9, QM9FormatError
from geognn.data.stats import avg_num_neighbors, energy_residuals, fit_element_energies, force_rms
from geognn.data.xtb import QM9xTB

__all__ = [
    "keys",
    "atoms_to_data",
    "MAX_ATOMIC_NUMBER",
    "QM9",
    "QM9xTB",
    "ASEDataset",
    "MD17",
    "CollatedDataset",
    "NAMED_SPLITS",
    "random_split_indices",
    "DatasetFormatError",
    "QM9FormatError",
    "fit_element_energies",
    "energy_residuals",
    "avg_num_neighbors",
    "force_rms",
]
