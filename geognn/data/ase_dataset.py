"""Energy, force and stress data from any file ASE can read (extxyz, ASE db, trajectory)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from geognn._checks import resolve_dtype
from geognn.data import keys
from geognn.data.atoms import atoms_to_data
from geognn.data.collated import CollatedDataset, file_fingerprint
from geognn.data.units import energy_unit_factor

PathLike = Union[str, os.PathLike]

# Version of the processed cache's layout; a change makes old caches stale.
CACHE_VERSION = 3

# Formats whose frames are "count line, comment line, one line per atom", so
# that a failing frame's first line number can be reported.
_XYZ_FORMATS = ("extxyz", "xyz")


class DatasetFormatError(ValueError):
    """A data file that cannot be read; the message names the file and the frame (and line)."""


def _lookup(atoms, key: str, per_atom: bool):
    """A property from the attached calculator's results, else from ``info`` / ``arrays``.

    ASE >= 3.23 moves extxyz ``energy``/``forces``/``stress`` into a
    SinglePointCalculator, while other names (``REF_energy``) stay in
    ``info``/``arrays``; both places are searched.
    """
    if atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
        return atoms.calc.results[key]
    return (atoms.arrays if per_atom else atoms.info).get(key)


def _stress_3x3(value, where: str) -> np.ndarray:
    stress = np.asarray(value, dtype=np.float64)
    if stress.shape == (6,):  # Voigt order xx, yy, zz, yz, xz, xy (ASE's)
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if stress.size == 9:
        return stress.reshape(3, 3)
    raise DatasetFormatError(f"{where}: stress must have 6 (Voigt) or 9 entries, got shape {stress.shape}")


def _selection(index) -> tuple[Union[int, slice], Optional[int]]:
    """An ASE index as (selection to apply to the frame list, last frame number needed or None for all)."""
    from ase.io.formats import string2index

    if isinstance(index, str):
        index = string2index(index)
    if isinstance(index, bool) or not isinstance(index, (int, slice)):
        raise TypeError(f"index must be an int, a slice or an ASE index string such as ':10', got {index!r}")
    if isinstance(index, int):
        return index, index if index >= 0 else None
    start, stop, step = index.start, index.stop, index.step
    bounded = stop is not None and stop >= 0 and (start is None or start >= 0) and (step is None or step > 0)
    return index, stop - 1 if bounded else None


def _as_float_array(value, label: str, name: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: {label} {name!r} is not numeric: {value!r}") from None
    if not np.isfinite(array).all():
        raise DatasetFormatError(f"{where}: {label} {name!r} contains NaN or inf")
    return array


class ASEDataset(CollatedDataset):
    """Structures with energies, forces and stress from ASE-readable files.

    Each item is a `Data` with ``z``, ``pos`` (Å), ``cell``/``pbc`` for
    periodic frames, and whichever labels the files carry: ``energy`` [1]
    (eV, float64), ``forces`` [n, 3] (eV/Å) and ``stress`` [1, 3, 3] (eV/Å³,
    ASE's sign convention). Labels are read from the calculator results that
    ASE attaches (extxyz ``energy=`` / ``forces`` columns, ``.db`` rows,
    ``.traj`` frames) or from ``atoms.info`` / ``atoms.arrays`` under the given
    key names. Frames may carry different labels (crystals with stress beside
    clusters without): a missing label is then filled with zeros and every
    item gets ``label_mask`` [1, 3] (`geognn.data.labels`), so that it counts
    in no loss term or error; `label_counts` says how many frames carry each.
    If some frames are periodic and others not, the non-periodic ones get a
    zero cell and ``pbc=False`` so that they batch together.

    Frames whose ``config_type`` is ``IsolatedAtom`` (MACE's convention: one
    atom, no cell, its energy the element's reference) are set aside, not
    items: their energies are `isolated_atom_energies`, which training uses
    with ``data.atom_reference: isolated``.

    Args:
        paths: one file or a list of files; frames are concatenated in order.
        index: ASE index of the frames to read from each file (``":"`` = all).
        format: ASE format name, if it cannot be guessed from the file name.
        energy_key: name of the energy label in the files; None skips it.
        forces_key: name of the force label; None skips it.
        stress_key: name of the stress label; None skips it.
        energy_unit: unit of the energies in the files (``"eV"``,
            ``"kcal/mol"``, ``"Hartree"``, ...); forces and stress are scaled
            with it (lengths are taken to be Å).
        dtype: floating dtype of positions, cells, forces and stress.
        transform: applied to each item on access, as in PyG.
        progress: show a progress bar while reading.
        group_by: record which group each frame belongs to, as ``group`` [1]
            (long), so that ``data.split_by: molecule`` keeps groups in one
            split: ``"file"`` (the file's position in ``paths``) or the name
            of a per-frame ``info`` value (extxyz comment key, e.g.
            ``qm9_index``); values are numbered in order of appearance.
        cache: where to keep the processed frames (collated tensors) so that a
            reload takes seconds: True (default) uses a ``processed/`` folder
            beside the first file, a path names the folder, False reads the
            files every time. The cache is keyed by the files' contents (their
            names and SHA-256), every option above that changes the frames
            (index, format, label keys, energy unit, dtype, group_by) and
            `CACHE_VERSION`, so a changed file or option rebuilds it; older
            caches of the same files are removed. A folder that cannot be
            written only warns.
        isolated_atom_type: the ``config_type`` info value of isolated-atom
            frames to set aside (None keeps them as ordinary frames).

    Raises:
        DatasetFormatError: an unreadable or truncated file (naming the file,
            frame and, for xyz files, line), or an isolated-atom frame that is
            not one atom with an energy.
    """

    def __init__(
        self,
        paths: Union[PathLike, Sequence[PathLike]],
        index: Union[str, int, slice] = ":",
        format: Optional[str] = None,
        energy_key: Optional[str] = "energy",
        forces_key: Optional[str] = "forces",
        stress_key: Optional[str] = "stress",
        energy_unit: str = "eV",
        dtype: Optional[torch.dtype] = None,
        transform=None,
        progress: bool = False,
        cache: Union[bool, PathLike] = True,
        group_by: Optional[str] = None,
        isolated_atom_type: Optional[str] = "IsolatedAtom",
    ):
        super().__init__(transform=transform)
        self.paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("ASEDataset needs at least one file")
        self.label_keys = {keys.ENERGY: energy_key, keys.FORCES: forces_key, keys.STRESS: stress_key}
        self.dtype = resolve_dtype(dtype)
        self._scale = energy_unit_factor(energy_unit)
        self.group_by = group_by
        self.isolated_atom_type = isolated_atom_type
        self._groups: dict = {}
        for path in self.paths:
            if not path.exists():
                raise FileNotFoundError(f"data file {path} does not exist")
        # Everything that changes what the frames hold; the cache is keyed by all of it.
        content = {"index": repr(index), "format": format, "label_keys": sorted(self.label_keys.items()),
                   "energy_unit": energy_unit, "dtype": str(self.dtype), "group_by": group_by,
                   "isolated_atom_type": isolated_atom_type, "cache_version": CACHE_VERSION}
        self._content_key = repr(sorted(content.items()))
        self.cache_path = self._cache_path(cache)
        if self.cache_path is not None and self._read_cache():
            return
        self._read_all(index, format, progress)
        if self.cache_path is not None:
            self._write_cache()

    def _read_all(self, index, format, progress: bool) -> None:
        frames: list[Data] = []
        self._isolated: dict[int, float] = {}
        for number, path in enumerate(self.paths):
            frames.extend(self._read(path, number, index, format, progress))
        if not frames:
            raise DatasetFormatError(f"no structures in {', '.join(map(str, self.paths))} (index={index!r})"
                                     + (" besides isolated atoms" if self._isolated else ""))
        self._label_counts = {label: sum(label in frame for frame in frames)
                              for label in keys.LABELS if any(label in frame for frame in frames)}
        if any(count < len(frames) for count in self._label_counts.values()):
            self._fill_missing_labels(frames)
        periodic = [keys.CELL in frame for frame in frames]
        if any(periodic) and not all(periodic):
            for frame in frames:
                if keys.CELL not in frame:
                    frame[keys.CELL] = torch.zeros(1, 3, 3, dtype=self.dtype)
                    frame[keys.PBC] = torch.zeros(1, 3, dtype=torch.bool)
        self._data, self.slices = self.collate(frames)

    def _fill_missing_labels(self, frames: list[Data]) -> None:
        """Zeros for the labels a frame lacks, and every frame's `keys.LABEL_MASK`."""
        for frame in frames:
            mask = torch.tensor([[label in frame for label in keys.LABELS]])
            num_atoms = frame[keys.ATOMIC_NUMBERS].shape[0]
            placeholders = {keys.ENERGY: lambda: torch.zeros(1, dtype=torch.float64),
                            keys.FORCES: lambda: torch.zeros(num_atoms, 3, dtype=self.dtype),
                            keys.STRESS: lambda: torch.zeros(1, 3, 3, dtype=self.dtype)}
            for label in self._label_counts:
                if label not in frame:
                    frame[label] = placeholders[label]()
            frame[keys.LABEL_MASK] = mask

    def _cache_path(self, cache) -> Optional[Path]:
        if cache is False or cache is None:
            return None
        folder = self.paths[0].resolve().parent / "processed" if cache is True else Path(cache)
        self._files_digest = file_fingerprint(self.paths)
        options_digest = hashlib.sha256(self._content_key.encode()).hexdigest()[:8]
        return folder / f"{self.paths[0].stem}_{self._files_digest}_{options_digest}.pt"

    def _read_cache(self) -> bool:
        """Load the cache if it exists and was written for these files and options (the name holds
        only short digests, so the full key stored inside is compared too)."""
        if not self.cache_path.exists():
            return False
        stored = torch.load(self.cache_path, weights_only=True, mmap=True)
        if stored.get("files") != self._files_digest or stored.get("content") != self._content_key:
            return False
        self._data, self.slices = Data.from_dict(stored["data"]), stored["slices"]
        self._label_counts, self._isolated = stored["label_counts"], stored["isolated"]
        return True

    def _write_cache(self) -> None:
        stored = {"data": self._data.to_dict(), "slices": self.slices, "label_counts": self._label_counts,
                  "isolated": self._isolated,
                  "files": self._files_digest, "content": self._content_key}
        folder = self.cache_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = self.cache_path.with_suffix(f".pt.{os.getpid()}.partial")
            torch.save(stored, partial)
            os.replace(partial, self.cache_path)
        except OSError as err:
            warnings.warn(f"could not write the dataset cache {self.cache_path} ({err}); "
                          "the files will be read again next time (pass cache= a writable folder)", stacklevel=3)
            return
        # Caches of earlier versions of these files (same name, other file fingerprint) are stale;
        # those of other options for the current files stay.
        stem, files_digest, _ = self.cache_path.stem.rsplit("_", 2)
        for stale in folder.glob(f"{stem}_*_*.pt"):
            parts = stale.stem.rsplit("_", 2)
            if len(parts) == 3 and parts[0] == stem and parts[1] != files_digest:
                stale.unlink(missing_ok=True)

    @property
    def labels(self) -> frozenset:
        """The label keys that some frame carries (a subset of energy, forces, stress)."""
        return frozenset(self._label_counts)

    @property
    def label_counts(self) -> dict[str, int]:
        """How many frames carry each label (labels no frame carries are absent)."""
        return dict(self._label_counts)

    @property
    def isolated_atom_energies(self) -> dict[int, float]:
        """Atomic number -> energy (eV) of the isolated-atom frames set aside (see the class doc)."""
        return dict(self._isolated)

    def _read(self, path: Path, number: int, index, format: Optional[str], progress: bool) -> list[Data]:
        import ase.io
        from ase.io.formats import filetype

        try:
            fmt = format or filetype(str(path), guess=True)
        except Exception as err:  # ASE raises several types for unknown files
            raise DatasetFormatError(f"{path}: ASE cannot tell the file format ({err}); pass format=") from None
        keep, last = _selection(index)
        # Frames are read in file order (index ":") so that an error names the
        # frame's number and line in the file, not in the selection.
        read, line = [], 1
        iterator = iter(ase.io.iread(str(path), index=":", format=fmt))
        bar = tqdm(desc=path.name, unit=" frames", disable=not progress)
        while last is None or len(read) <= last:
            where = f"{path}, frame {len(read)}" + (f" (line {line})" if fmt in _XYZ_FORMATS else "")
            try:
                atoms = next(iterator)
            except StopIteration:
                break
            except Exception as err:  # ASE's readers raise many types on bad input
                raise DatasetFormatError(f"{where}: cannot read the frame ({type(err).__name__}: {err})") from None
            read.append((atoms, where))
            line += len(atoms) + 2
            bar.update()
        bar.close()
        try:
            chosen = range(len(read))[keep]
        except IndexError:
            raise DatasetFormatError(f"{path}: index {index!r} is out of range; the file has {len(read)} frames") from None
        frames = []
        for k in [chosen] if isinstance(chosen, int) else chosen:
            atoms, where = read[k]
            if self.isolated_atom_type is not None and atoms.info.get("config_type") == self.isolated_atom_type:
                self._set_aside(atoms, where)
            else:
                frames.append(self._convert(atoms, where, number))
        return frames

    def _set_aside(self, atoms, where: str) -> None:
        """Keep an isolated-atom frame's energy as its element's reference."""
        name = self.label_keys[keys.ENERGY]
        value = _lookup(atoms, name, per_atom=False) if name is not None else None
        if len(atoms) != 1 or value is None or atoms.pbc.any():
            raise DatasetFormatError(
                f"{where}: config_type={self.isolated_atom_type} marks an isolated atom, but the frame has "
                f"{len(atoms)} atoms, {'an' if value is not None else 'no'} energy {name!r} and pbc "
                f"{atoms.pbc.tolist()} (it needs one atom, an energy and no periodicity; pass "
                "isolated_atom_type=None to read such frames as ordinary structures)")
        z = int(atoms.numbers[0])
        energy = float(_as_float_array(value, "energy", name, where).reshape(-1)[0]) * self._scale
        if z in self._isolated and abs(self._isolated[z] - energy) > 1e-9 * max(1.0, abs(energy)):
            raise DatasetFormatError(f"{where}: a second isolated {atoms.get_chemical_symbols()[0]} atom with "
                                     f"another energy ({energy} eV, earlier {self._isolated[z]} eV)")
        self._isolated[z] = energy

    def _convert(self, atoms, where: str, file_number: int) -> Data:
        try:
            data = atoms_to_data(atoms, dtype=self.dtype)
        except ValueError as err:
            raise DatasetFormatError(f"{where}: {err}") from None
        if self.group_by is not None:
            value = file_number if self.group_by == "file" else atoms.info.get(self.group_by)
            if value is None:
                raise DatasetFormatError(f"{where}: no {self.group_by!r} in the frame's info to group by "
                                         f"(it has {sorted(atoms.info)})")
            key = value.item() if hasattr(value, "item") else value
            data[keys.GROUP] = torch.tensor([self._groups.setdefault(key, len(self._groups))])
        found = set()
        for label, name in self.label_keys.items():
            if name is None:
                continue
            value = _lookup(atoms, name, per_atom=label == keys.FORCES)
            if value is None:
                continue
            found.add(label)
            value = _as_float_array(value, label, name, where)
            if label == keys.ENERGY:
                energy = value.reshape(-1)
                if energy.size != 1:
                    raise DatasetFormatError(f"{where}: energy {name!r} must be one number, got shape {energy.shape}")
                data[label] = torch.as_tensor(energy * self._scale, dtype=torch.float64)
            elif label == keys.FORCES:
                forces = value
                if forces.shape != (len(atoms), 3):
                    raise DatasetFormatError(f"{where}: forces {name!r} have shape {forces.shape}, expected ({len(atoms)}, 3)")
                data[label] = torch.as_tensor(forces * self._scale, dtype=self.dtype)
            else:
                stress = _stress_3x3(value, where) * self._scale
                data[label] = torch.as_tensor(stress, dtype=self.dtype).reshape(1, 3, 3)
        return data

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.paths)
        counts = ", ".join(f"{label} {count}" for label, count in self._label_counts.items())
        return f"ASEDataset({len(self)}, files=[{names}], labels: {counts})"
