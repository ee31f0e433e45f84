"""QM9 (Ramakrishnan et al., Sci. Data 1, 140022, 2014), read offline.

Two sources are understood:

* the ``qm9pack`` package (``pip install "geognn[qm9]"``), whose CSV files hold
  all 130,831 characterised molecules with coordinates and properties. Its own
  ``get_data()`` needs ``pkg_resources`` and pandas; geognn locates the files
  without importing the package and parses them with the ``csv`` module.
* the original ``dsgdb9nsd.xyz`` files from the QM9 figshare collection
  (https://doi.org/10.6084/m9.figshare.978904), as a folder of ``*.xyz`` files
  or the ``dsgdb9nsd.xyz.tar.bz2`` tarball. That set has 133,885 molecules;
  pass the collection's ``uncharacterized.txt`` (or keep it next to the source)
  to drop the 3,054 whose geometry checks failed, as most papers do.

The parsed set is written once to ``<root>/processed/`` and reloaded from there;
the cache is keyed by the source files' contents (names and SHA-256, including
``uncharacterized.txt``) and `FORMAT_VERSION`, so a changed source or a new
format re-processes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from geognn._checks import resolve_dtype
from geognn.data import keys
from geognn.data.collated import CollatedDataset, TargetInfo, file_fingerprint, flat_storage
from geognn.data.qm9_sources import (  # noqa: F401 - re-exported: the readers and constants live there
    ALL_TARGETS,
    ATOMIZATION_TARGETS,
    ATOM_REFERENCE_HARTREE,
    ENERGY_TARGETS,
    FORMAT_VERSION,
    INTENSIVE_TARGETS,
    QM9FormatError,
    TARGETS,
    UNITS,
    _QM9PACK_FILES,
    _REFERENCED_TARGETS,
    _atom_reference_table,
    _reorder,
    parse_qm9_xyz,
    qm9pack_data_dir,
    read_qm9_xyz,
    read_qm9pack,
    read_uncharacterized,
    to_targets,
)
from geognn.data.units import HARTREE_TO_EV


# ---------------------------------------------------------------- dataset


class QM9(CollatedDataset):
    """QM9: 130,831 small organic molecules (H, C, N, O, F) with 12 DFT properties.

    Each item is a `Data` with ``z`` [n], ``pos`` [n, 3] (Å), ``y`` [1, 16]
    (the targets in `ALL_TARGETS` order, float64), ``idx`` [1] (the molecule's
    QM9 index, 1-based as in ``dsgdb9nsd_000001``) and ``energy`` [1] (float64),
    a copy of the chosen ``target``. The chosen target is stored under
    ``energy`` whatever it measures, because that is the scalar geognn models
    output and train against.

    Units (`UNITS`): mu in Debye, alpha in Bohr³, r2 in Bohr², Cv in
    cal/(mol K), and every energy (homo, lumo, gap, zpve, U0, U, H, G and the
    atomization energies U0_atom ... G_atom) in eV, converted from Hartree with
    the CODATA 2018 factor `geognn.data.units.HARTREE_TO_EV`. Targets stay
    float64 so that totals such as U0 (about -1e4 eV) keep sub-meV precision.

    Args:
        root: folder for the processed cache (``<root>/processed/``).
        target: one of `ALL_TARGETS` copied into ``energy``, or None for none.
        source: None reads the ``qm9pack`` package; otherwise a folder of
            ``dsgdb9nsd_*.xyz`` files or a tarball of them.
        uncharacterized: path of QM9's ``uncharacterized.txt``, whose molecules
            are dropped (only for ``.xyz`` sources; qm9pack already omits them).
            By default a file of that name next to the source is used if present.
        subset: keep only this many molecules, drawn at random with ``seed``
            (in their original order), for quick runs; splits then divide the subset.
        seed: seed of the subset.
        dtype: floating dtype of ``pos``; default ``torch.get_default_dtype()``.
        transform: applied to each item on access, as in PyG.
        force_reload: re-process even if a valid cache exists.
        progress: show progress bars while processing.

    Example::

        dataset = QM9("data/qm9", target="U0")
        train, val, test = dataset.split("dimenet")  # 110,000 / 10,000 / 10,831
    """

    def __init__(
        self,
        root="data/qm9",
        target: Optional[str] = "U0",
        source=None,
        uncharacterized=None,
        subset: Optional[int] = None,
        seed: int = 0,
        dtype: Optional[torch.dtype] = None,
        transform=None,
        force_reload: bool = False,
        progress: bool = True,
    ):
        if target is not None and target not in ALL_TARGETS:
            raise ValueError(f"unknown QM9 target {target!r}; choose one of {list(ALL_TARGETS)}")
        dtype = resolve_dtype(dtype)
        super().__init__(transform=transform)
        self.root, self.target = Path(root), target
        self.cache_path, stored = self._load_or_process(source, uncharacterized, force_reload, progress)
        node = {keys.ATOMIC_NUMBERS: stored["z"], keys.POSITIONS: stored["pos"].to(dtype)}
        graph = {keys.QM9_TARGETS: stored["y"], keys.DATASET_INDEX: stored["index"]}
        if target is not None:
            graph[keys.ENERGY] = stored["y"][:, ALL_TARGETS.index(target)].clone()
        self._data, self.slices = flat_storage(node, graph, stored["num_atoms"])
        if subset is not None:
            if isinstance(subset, bool) or not isinstance(subset, int) or not 0 < subset <= len(stored["index"]):
                raise ValueError(f"subset must be an integer in 1..{len(stored['index'])}, got {subset!r}")
            generator = torch.Generator().manual_seed(int(seed))
            chosen = torch.randperm(len(stored["index"]), generator=generator)[:subset].sort().values
            self._indices = chosen.tolist()

    def _load_or_process(self, source, uncharacterized, force_reload: bool, progress: bool) -> tuple[Path, dict]:
        if source is None:
            data_dir = qm9pack_data_dir()
            inputs = [data_dir / name for name in _QM9PACK_FILES]
            kind = "qm9pack"
        else:
            source = Path(source)
            if not source.exists():
                raise FileNotFoundError(f"QM9 source {source} does not exist")
            inputs = sorted(source.glob("*.xyz")) if source.is_dir() else [source]
            kind = "xyz"
            if uncharacterized is None and (source.parent / "uncharacterized.txt").exists():
                uncharacterized = source.parent / "uncharacterized.txt"
            if uncharacterized is not None:
                inputs.append(Path(uncharacterized))
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise FileNotFoundError(f"QM9 source files are missing: {missing}")
        fingerprint = file_fingerprint(inputs)
        path = self.root / "processed" / f"qm9_{kind}_{fingerprint}_v{FORMAT_VERSION}.pt"
        if path.exists() and not force_reload:
            stored = torch.load(path, weights_only=True)
            if stored.get("format_version") == FORMAT_VERSION and stored.get("inputs") == fingerprint:
                return path, stored
        arrays = read_qm9pack(inputs[0].parent, progress) if kind == "qm9pack" else read_qm9_xyz(source, progress)
        if uncharacterized is not None:
            excluded = read_uncharacterized(uncharacterized)
            keep = np.flatnonzero(~np.isin(arrays["index"], list(excluded)))
            arrays = _reorder(arrays, keep)
        elif kind == "xyz" and len(arrays["index"]) > 130_831:
            warnings.warn(
                f"QM9 from {source}: keeping all {len(arrays['index'])} molecules; pass "
                "uncharacterized='uncharacterized.txt' to drop the 3,054 unconverged ones as most papers do",
                stacklevel=3,
            )
        stored = {
            "format_version": FORMAT_VERSION,
            "inputs": fingerprint,
            "index": torch.from_numpy(arrays["index"]),
            "num_atoms": torch.from_numpy(arrays["num_atoms"]),
            "z": torch.from_numpy(arrays["z"]),
            "pos": torch.from_numpy(arrays["pos"]),
            "y": torch.from_numpy(to_targets(arrays)),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"qm9_{kind}_*.pt"):
            stale.unlink()
        partial = path.with_suffix(f".pt.{os.getpid()}.partial")
        torch.save(stored, partial)
        os.replace(partial, path)
        return path, stored

    @property
    def target_info(self) -> TargetInfo:
        """The chosen target's name, unit, and whether it is intensive or a potential energy."""
        if self.target is None:
            raise ValueError("this QM9 dataset has no target; pass target= (e.g. U0, gap, mu)")
        return TargetInfo(self.target, UNITS[self.target], self.target in INTENSIVE_TARGETS,
                          self.target in ENERGY_TARGETS)

    @staticmethod
    def atom_reference(target: str = "U0") -> torch.Tensor:
        """Single-atom reference energies in eV for ``target`` in (U0, U, H, G), indexed by Z [10]."""
        if target not in _REFERENCED_TARGETS:
            raise ValueError(f"atom references exist for {_REFERENCED_TARGETS}, not {target!r}")
        return torch.from_numpy(_atom_reference_table()[:, _REFERENCED_TARGETS.index(target)] * HARTREE_TO_EV)

    def __repr__(self) -> str:
        return f"QM9({len(self)}, target={self.target!r})"


__all__ = [
    "QM9",
    "QM9FormatError",
    "TARGETS",
    "ATOMIZATION_TARGETS",
    "ALL_TARGETS",
    "UNITS",
    "ATOM_REFERENCE_HARTREE",
    "read_qm9pack",
    "read_qm9_xyz",
    "parse_qm9_xyz",
    "qm9pack_data_dir",
]
