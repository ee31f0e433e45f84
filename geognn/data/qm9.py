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
the cache file name holds the source's fingerprint (path, size, modification
time) and `FORMAT_VERSION`, so a changed source or a new format re-processes.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import tarfile
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from geognn._checks import resolve_dtype
from geognn.data import keys
from geognn.data.collated import CollatedDataset, TargetInfo, flat_storage
from geognn.data.units import HARTREE_TO_EV

FORMAT_VERSION = 1

# The 12 standard targets, in the order of the QM9 paper's Table 3 (and of
# PyG's QM9), followed by the four atomization energies.
TARGETS = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
ATOMIZATION_TARGETS = ("U0_atom", "U_atom", "H_atom", "G_atom")
ALL_TARGETS = TARGETS + ATOMIZATION_TARGETS
# Orbital energies do not grow with molecule size: a mean readout suits them (SchNetPack's QM9
# recipes aggregate them with "avg"); every other target is summed.
INTENSIVE_TARGETS = frozenset({"homo", "lumo", "gap"})
# Targets that are a potential energy of the geometry (total or atomization energies, eV).
ENERGY_TARGETS = frozenset({"U0", "U", "H", "G"}) | frozenset(ATOMIZATION_TARGETS)

UNITS = {
    "mu": "D",  # dipole moment, Debye (as in QM9)
    "alpha": "a0^3",  # isotropic polarizability, Bohr^3 (as in QM9)
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "a0^2",  # electronic spatial extent, Bohr^2 (as in QM9)
    "zpve": "eV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "Cv": "cal/(mol K)",  # heat capacity at 298.15 K (as in QM9)
    "U0_atom": "eV",
    "U_atom": "eV",
    "H_atom": "eV",
    "G_atom": "eV",
}

# Columns QM9 gives in Hartree; they are multiplied by HARTREE_TO_EV.
_HARTREE_TARGETS = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")

# Single-atom reference energies in Hartree (B3LYP/6-31G(2df,p)), from the
# QM9 collection's "atomref" table (https://doi.org/10.6084/m9.figshare.1057643):
# the atomization energy of a molecule is its energy minus the sum of these.
ATOM_REFERENCE_HARTREE = {
    #      U0          U           H           G
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}

_REFERENCED_TARGETS = ("U0", "U", "H", "G")  # the columns of ATOM_REFERENCE_HARTREE

_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

# qm9pack CSV column for each target (the isotropic polarizability is in the main files).
_QM9PACK_COLUMNS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",
    "G": "GibbsFreeEnergy_298K_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
}
_QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


class QM9FormatError(ValueError):
    """A QM9 source file that cannot be parsed; the message names the file and line."""

    def __init__(self, path, line: Optional[int], problem: str):
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line = str(path), line


# ---------------------------------------------------------------- sources


def qm9pack_data_dir() -> Path:
    """The folder holding qm9pack's CSV files, found without importing qm9pack.

    (Importing it fails on Python environments without ``pkg_resources``.)
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "QM9 reads the 'qm9pack' package by default and it is not installed; "
            "run `pip install \"geognn[qm9]\"` (or `pip install qm9pack`), or pass "
            "source= a folder or tarball of the original dsgdb9nsd .xyz files"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _fingerprint(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


class _Molecules:
    """Accumulates parsed molecules as flat lists."""

    def __init__(self):
        self.index: list[int] = []
        self.num_atoms: list[int] = []
        self.z: list[int] = []
        self.props: list[list[float]] = []  # 12 values per molecule in source units
        self.coord_strings: list[str] = []  # comma-separated "x,y,z,..." per molecule
        self.lines: list[tuple[str, int]] = []  # (file, line) per molecule, for errors

    def arrays(self) -> dict[str, np.ndarray]:
        try:
            pos = np.array(",".join(self.coord_strings).split(","), dtype=np.float64)
        except ValueError:
            # Find the molecule with the bad number, to name its file and line.
            for text, (path, line) in zip(self.coord_strings, self.lines):
                try:
                    np.array(text.split(","), dtype=np.float64)
                except ValueError as err:
                    raise QM9FormatError(path, line, f"bad coordinate: {err}") from None
            raise
        pos = pos.reshape(-1, 3)
        if not np.isfinite(pos).all():
            bad = int(np.flatnonzero(~np.isfinite(pos).all(1))[0])
            mol = int(np.searchsorted(np.cumsum(self.num_atoms), bad, side="right"))
            raise QM9FormatError(*self.lines[mol], "non-finite coordinate")
        return {
            "index": np.asarray(self.index, dtype=np.int64),
            "num_atoms": np.asarray(self.num_atoms, dtype=np.int64),
            "z": np.asarray(self.z, dtype=np.int64),
            "pos": pos,
            "props": np.asarray(self.props, dtype=np.float64).reshape(-1, len(TARGETS)),
        }


def _parse_float(text: str, path, line: int, what: str) -> float:
    try:
        return float(text.replace("*^", "e"))
    except ValueError:
        raise QM9FormatError(path, line, f"{what} is not a number: {text!r}") from None


def _symbols_to_z(symbols: Sequence[str], path, line: int) -> list[int]:
    try:
        return [_SYMBOLS[s] for s in symbols]
    except KeyError as err:
        raise QM9FormatError(path, line, f"element {err.args[0]!r} is not one of QM9's H, C, N, O, F") from None


def read_qm9pack(data_dir: Optional[Path] = None, progress: bool = False) -> dict[str, np.ndarray]:
    """Parse qm9pack's CSV files into flat arrays (units as in the source)."""
    data_dir = Path(data_dir) if data_dir is not None else qm9pack_data_dir()
    molecules = _Molecules()
    for name in _QM9PACK_FILES:
        path = data_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; reinstall qm9pack (`pip install --force-reinstall qm9pack`)")
        with open(path, newline="") as handle, tqdm(desc=name, unit=" molecules", disable=not progress) as bar:
            _read_qm9pack_csv(path, handle, molecules, bar)
    return molecules.arrays()


def _read_qm9pack_csv(path: Path, handle, molecules: _Molecules, bar) -> None:
    reader = csv.reader(handle, strict=True)
    try:
        header = next(reader)
        needed = ["Index", "N_atoms", "Elements", "XYZ_Ang", *_QM9PACK_COLUMNS.values()]
        missing = [name for name in needed if name not in header]
        if missing:
            raise QM9FormatError(path, 1, f"header lacks the columns {missing}; is this a qm9pack CSV?")
        column = {name: header.index(name) for name in needed}
        target_columns = [column[_QM9PACK_COLUMNS[t]] for t in TARGETS]
        for row in reader:
            line = reader.line_num
            if len(row) != len(header):
                raise QM9FormatError(path, line, f"expected {len(header)} fields, found {len(row)} (truncated file?)")
            try:
                index, num = int(row[column["Index"]]), int(row[column["N_atoms"]])
            except ValueError:
                raise QM9FormatError(path, line, "Index and N_atoms must be integers") from None
            symbols = [s.strip(" '\"") for s in row[column["Elements"]].strip("[] ").split(",")]
            coords = row[column["XYZ_Ang"]].replace("[", "").replace("]", "").replace(" ", "")
            if len(symbols) != num or coords.count(",") + 1 != 3 * num:
                raise QM9FormatError(
                    path, line, f"molecule {index} has N_atoms={num} but {len(symbols)} elements and "
                    f"{coords.count(',') + 1} coordinates (expected {3 * num})"
                )
            molecules.z.extend(_symbols_to_z(symbols, path, line))
            molecules.props.append([_parse_float(row[c], path, line, header[c]) for c in target_columns])
            molecules.index.append(index)
            molecules.num_atoms.append(num)
            molecules.coord_strings.append(coords)
            molecules.lines.append((str(path), line))
            bar.update()
    except csv.Error as err:
        raise QM9FormatError(path, reader.line_num, f"malformed CSV ({err}); the file may be truncated") from None


def _xyz_members(source: Path) -> Iterator[tuple[str, str]]:
    """(name, text) of each dsgdb9nsd .xyz file in a folder (in name order) or a tarball (in archive order)."""
    if source.is_dir():
        paths = sorted(source.glob("*.xyz"))
        if not paths:
            raise FileNotFoundError(f"no .xyz files in {source}")
        for path in paths:
            yield str(path), path.read_text()
        return
    try:
        archive = tarfile.open(source)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise QM9FormatError(source, None, f"cannot open as a tar archive ({err})") from None
    with archive:
        # Archive order, not name order: seeking backwards in a compressed
        # stream decompresses it again from the start. The caller sorts.
        try:
            for member in archive:
                if member.isfile() and member.name.endswith(".xyz"):
                    yield f"{source}:{member.name}", archive.extractfile(member).read().decode()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise QM9FormatError(source, None, f"the archive is corrupt or truncated ({err})") from None


def parse_qm9_xyz(text: str, name: str, molecules: _Molecules) -> None:
    """Parse one file in the QM9 extended-XYZ format (see the QM9 paper, Table 2)."""
    lines = text.splitlines()
    if not lines:
        raise QM9FormatError(name, 1, "empty file")
    try:
        num = int(lines[0])
    except ValueError:
        raise QM9FormatError(name, 1, f"first line must be the number of atoms, got {lines[0]!r}") from None
    if len(lines) < num + 2:
        raise QM9FormatError(name, len(lines), f"file ends after {len(lines)} lines; {num} atoms need {num + 5}")
    props = lines[1].split()
    if len(props) != 17 or props[0] != "gdb":
        raise QM9FormatError(name, 2, f"expected 'gdb <index>' and 15 properties, found {len(props)} fields")
    try:
        index = int(props[1])
    except ValueError:
        raise QM9FormatError(name, 2, f"molecule index {props[1]!r} is not an integer") from None
    # props[2:5] are the rotational constants A, B, C; the 12 targets follow in TARGETS order.
    values = [_parse_float(v, name, 2, target) for v, target in zip(props[5:], TARGETS)]
    symbols, coords = [], []
    for offset in range(num):
        fields = lines[2 + offset].split()
        if len(fields) < 4:
            raise QM9FormatError(name, 3 + offset, f"expected 'element x y z charge', got {lines[2 + offset]!r}")
        symbols.append(fields[0])
        coords.extend(repr(_parse_float(f, name, 3 + offset, "coordinate")) for f in fields[1:4])
    molecules.z.extend(_symbols_to_z(symbols, name, 3))
    molecules.props.append(values)
    molecules.index.append(index)
    molecules.num_atoms.append(num)
    molecules.coord_strings.append(",".join(coords))
    molecules.lines.append((name, 1))


def read_qm9_xyz(source, progress: bool = False) -> dict[str, np.ndarray]:
    """Parse the original dsgdb9nsd .xyz files (a folder or a tarball) into flat arrays."""
    molecules = _Molecules()
    for name, text in tqdm(_xyz_members(Path(source)), desc="QM9 xyz", unit=" files", disable=not progress):
        parse_qm9_xyz(text, name, molecules)
    arrays = molecules.arrays()
    order = np.argsort(arrays["index"], kind="stable")
    if not np.array_equal(order, np.arange(order.size)):
        arrays = _reorder(arrays, order)
    return arrays


def _reorder(arrays: dict[str, np.ndarray], order: np.ndarray) -> dict[str, np.ndarray]:
    ptr = np.concatenate([[0], np.cumsum(arrays["num_atoms"])])
    atoms = np.concatenate([np.arange(ptr[m], ptr[m + 1]) for m in order]) if order.size else order
    return {
        "index": arrays["index"][order],
        "num_atoms": arrays["num_atoms"][order],
        "props": arrays["props"][order],
        "z": arrays["z"][atoms],
        "pos": arrays["pos"][atoms],
    }


def read_uncharacterized(path) -> set[int]:
    """Molecule indices listed in the QM9 collection's ``uncharacterized.txt``."""
    indices = set()
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if fields and fields[0].isdigit():
                indices.add(int(fields[0]))
    if not indices:
        raise QM9FormatError(path, None, "no molecule indices found; expected the QM9 'uncharacterized.txt' table")
    return indices


def _atom_reference_table() -> np.ndarray:
    """`ATOM_REFERENCE_HARTREE` as an array [10, 4] (Z; U0, U, H, G), zero for other elements."""
    reference = np.zeros((max(ATOM_REFERENCE_HARTREE) + 1, 4))
    for z, values in ATOM_REFERENCE_HARTREE.items():
        reference[z] = values
    return reference


def to_targets(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """[M, 16] targets in `UNITS` (eV for energies) from the 12 source columns."""
    props = arrays["props"].copy()
    for target in _HARTREE_TARGETS:
        props[:, TARGETS.index(target)] *= HARTREE_TO_EV
    reference = _atom_reference_table()
    molecule = np.repeat(np.arange(arrays["num_atoms"].size), arrays["num_atoms"])
    atom_sum = np.zeros((arrays["num_atoms"].size, 4))
    np.add.at(atom_sum, molecule, reference[arrays["z"]])
    # Subtract in Hartree, then convert, so the small difference keeps full precision.
    raw = arrays["props"][:, [TARGETS.index(t) for t in _REFERENCED_TARGETS]]
    atomization = (raw - atom_sum) * HARTREE_TO_EV
    return np.concatenate([props, atomization], axis=1)


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
        self.cache_path = self._load_or_process(source, uncharacterized, force_reload, progress)
        stored = torch.load(self.cache_path, weights_only=True)
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

    def _load_or_process(self, source, uncharacterized, force_reload: bool, progress: bool) -> Path:
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
        path = self.root / "processed" / f"qm9_{kind}_{_fingerprint(inputs)}_v{FORMAT_VERSION}.pt"
        if path.exists() and not force_reload:
            return path
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
        return path

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
