"""QM9's sources and constants: the qm9pack CSV files and the original .xyz files, parsed into
flat arrays, with the targets' units and the single-atom references (see `geognn.data.qm9`,
whose `QM9` dataset caches what these readers return).
"""

from __future__ import annotations

import csv
import importlib.util
import tarfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

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
