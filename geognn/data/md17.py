"""MD17 and revised MD17 trajectories from their ``.npz`` files.

* MD17 as distributed by sGDML (Chmiela et al., Sci. Adv. 3, e1603015, 2017;
  http://sgdml.org): arrays ``R`` [F, n, 3] (Å), ``z`` [n], ``E`` [F, 1]
  (kcal/mol) and ``F`` [F, n, 3] (kcal/mol/Å).
* rMD17 (Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018,
  2020; https://doi.org/10.6084/m9.figshare.12672038): ``coords``,
  ``nuclear_charges``, ``energies`` (kcal/mol) and ``forces`` (kcal/mol/Å).
  Its archive also has ``splits/index_train_0K.csv`` / ``index_test_0K.csv``
  (K = 1..5), the official 1,000-frame train and test index sets, which
  `MD17.official_split` reads.

Energies and forces are converted to eV and eV/Å (1 kcal/mol =
`geognn.data.units.KCAL_PER_MOL_TO_EV` eV).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from geognn._checks import resolve_dtype
from geognn.data import keys
from geognn.data.atoms import MAX_ATOMIC_NUMBER
from geognn.data.ase_dataset import DatasetFormatError
from geognn.data.collated import CollatedDataset, flat_storage
from geognn.data.units import energy_unit_factor

# Array names of each layout: positions, atomic numbers, energies, forces.
LAYOUTS = {
    "md17": ("R", "z", "E", "F"),
    "rmd17": ("coords", "nuclear_charges", "energies", "forces"),
}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"MD17 file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            layout = next((name for name, arrays in LAYOUTS.items() if set(arrays) <= names), None)
            if layout is None:
                raise DatasetFormatError(
                    f"{path}: holds arrays {sorted(names)}; expected MD17 ({', '.join(LAYOUTS['md17'])}) "
                    f"or rMD17 ({', '.join(LAYOUTS['rmd17'])})"
                )
            arrays = {name: archive[name] for name in LAYOUTS[layout]}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        if isinstance(err, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable .npz file ({type(err).__name__}: {err}); truncated download?") from None
    arrays["layout"] = layout
    return arrays


class MD17(CollatedDataset):
    """One molecule's MD17 or rMD17 trajectory: ``z``, ``pos``, ``energy`` [1] (eV, float64), ``forces`` (eV/Å).

    The layout (MD17 or rMD17) is recognised from the array names.

    Args:
        path: the ``.npz`` file, e.g. ``md17_ethanol.npz`` or ``rmd17_ethanol.npz``.
        energy_unit: unit of the file's energies; kcal/mol for both official
            releases. Forces are taken to be in the same unit per Å.
        dtype: floating dtype of positions and forces.
        transform: applied to each item on access, as in PyG.

    Example::

        data = MD17("rmd17/npz_data/rmd17_aspirin.npz")
        train, test = data.official_split("rmd17/splits", fold=1)
        train, val = train.split((950, 50))
    """

    def __init__(self, path, energy_unit: str = "kcal/mol", dtype: Optional[torch.dtype] = None, transform=None):
        super().__init__(transform=transform)
        self.path = Path(path)
        dtype = resolve_dtype(dtype)
        scale = energy_unit_factor(energy_unit)
        arrays = _load_npz(self.path)
        self.layout = arrays.pop("layout")
        r_name, z_name, e_name, f_name = LAYOUTS[self.layout]
        pos, numbers = np.asarray(arrays[r_name], dtype=np.float64), np.asarray(arrays[z_name])
        energy, forces = np.asarray(arrays[e_name], dtype=np.float64), np.asarray(arrays[f_name], dtype=np.float64)
        if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] == 0:
            raise DatasetFormatError(f"{self.path}: {r_name!r} must have shape [frames, atoms, 3], got {pos.shape}")
        frames, num_atoms = pos.shape[:2]
        if numbers.shape != (num_atoms,) or not np.issubdtype(numbers.dtype, np.integer):
            raise DatasetFormatError(f"{self.path}: {z_name!r} must be {num_atoms} integers, got {numbers.dtype} {numbers.shape}")
        if numbers.min() < 1 or numbers.max() > MAX_ATOMIC_NUMBER:
            raise DatasetFormatError(f"{self.path}: {z_name!r} holds atomic numbers outside 1..{MAX_ATOMIC_NUMBER}")
        if energy.size != frames or energy.ndim > 2:
            raise DatasetFormatError(f"{self.path}: {e_name!r} has shape {energy.shape}, expected [{frames}] or [{frames}, 1]")
        if forces.shape != pos.shape:
            raise DatasetFormatError(f"{self.path}: {f_name!r} has shape {forces.shape}, expected {pos.shape}")
        for name, value in ((r_name, pos), (e_name, energy), (f_name, forces)):
            if not np.isfinite(value).all():
                raise DatasetFormatError(f"{self.path}: {name!r} contains NaN or inf")
        node = {
            keys.ATOMIC_NUMBERS: torch.as_tensor(numbers, dtype=torch.long).repeat(frames),
            keys.POSITIONS: torch.as_tensor(pos.reshape(-1, 3), dtype=dtype),
            keys.FORCES: torch.as_tensor(forces.reshape(-1, 3) * scale, dtype=dtype),
        }
        graph = {keys.ENERGY: torch.as_tensor(energy.reshape(-1) * scale, dtype=torch.float64)}
        self._data, self.slices = flat_storage(node, graph, torch.full((frames,), num_atoms))

    def official_split(self, splits_dir, fold: int = 1) -> tuple["MD17", "MD17"]:
        """rMD17's official (train, test) index sets ``index_train_0{fold}.csv`` / ``index_test_0{fold}.csv``."""
        if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= 5:
            raise ValueError(f"rMD17 ships folds 1..5, got {fold!r}")
        return tuple(
            self.index_select(read_index_file(Path(splits_dir) / f"index_{part}_0{fold}.csv", len(self)))
            for part in ("train", "test")
        )

    def __repr__(self) -> str:
        return f"MD17({len(self)}, file={self.path.name!r}, layout={self.layout!r})"


def read_index_file(path: Path, num_frames: int) -> torch.Tensor:
    """Frame indices, one integer per line (rMD17's split files), checked against the trajectory length."""
    if not path.exists():
        raise FileNotFoundError(f"split file {path} does not exist")
    indices = []
    with open(path) as handle:
        for line_number, line in enumerate(handle, 1):
            text = line.strip()
            if not text:
                continue
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if not number.is_integer():
                raise DatasetFormatError(f"{path}, line {line_number}: {text!r} is not a frame index")
            value = int(number)
            if not 0 <= value < num_frames:
                raise DatasetFormatError(f"{path}, line {line_number}: index {value} outside 0..{num_frames - 1}")
            indices.append(value)
    return torch.tensor(indices, dtype=torch.long)
