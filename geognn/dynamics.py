"""Molecular dynamics and geometry optimisation with a trained checkpoint: what ``geognn md`` and ``geognn relax`` run.

    from geognn.dynamics import load_calculator, read_structure, run_md, run_relax

    atoms = read_structure("molecule.xyz")
    atoms.calc = load_calculator(["runs/qm9_xtb_egnn"], dtype="float64")
    summary = run_md(atoms, steps=2000, timestep_fs=0.5, temperature_K=300, trajectory="runs/md/md.traj")
    print(summary.line())      # NVE: total-energy drift per atom

Several checkpoints make an `EnsembleCalculator`: the MD log then carries the
committee's largest per-atom force spread at every logged step, and the
summary its maximum. ``thermostat="npt"`` holds a pressure on a cell periodic in
all three directions (``pressure_GPa``; the log adds volume and pressure, the
summary their means over the second half of the run). Everything here is ASE
(Velocity Verlet, Langevin, LangevinBAOAB, BFGS, FIRE, FrechetCellFilter) driven
through the geognn calculator; this module uses the calculator and ASE only,
never the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from ase import Atoms, units
from tqdm.auto import tqdm

from geognn.calculator import EnsembleCalculator, GeoGNNCalculator

PathLike = Union[str, Path]
THERMOSTATS = ("nve", "langevin", "npt")
NPT_CELLS = ("isotropic", "full")  # the cell's shape kept (only its volume changes), or free to change too
OPTIMIZERS = ("bfgs", "fire")


def load_calculator(checkpoints: Sequence[PathLike], device: str = "cpu", dtype: Optional[str] = "float64"):
    """One checkpoint: a `GeoGNNCalculator`; several: an `EnsembleCalculator` (mean and spread)."""
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ValueError("give at least one checkpoint (a run folder or a .pt file)")
    for path in checkpoints:
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
    if len(checkpoints) == 1:
        return GeoGNNCalculator.from_checkpoint(checkpoints[0], device=device, dtype=dtype)
    return EnsembleCalculator.from_checkpoints(checkpoints, device=device, dtype=dtype)


def read_structure(path: PathLike, index: Union[int, str] = 0) -> Atoms:
    """One structure from any file ASE reads; a missing or unreadable file raises with its name."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    try:
        atoms = ase.io.read(str(path), index=index)
    except Exception as err:  # ASE raises many types on bad input
        raise ValueError(f"cannot read a structure from {path} ({type(err).__name__}: {err})") from None
    if isinstance(atoms, list) or len(atoms) == 0:
        raise ValueError(f"{path} (index {index!r}) holds no single structure")
    atoms.calc = None
    return atoms


@dataclass
class MDSummary:
    thermostat: str
    steps: int
    time_fs: float
    num_atoms: int
    initial_total: float  # eV
    final_total: float  # eV
    mean_temperature: float  # K, over logged steps
    max_force_std: Optional[float]  # eV/Å, largest committee spread seen (ensembles)
    pressure_GPa: Optional[float] = None  # NPT: the pressure held
    mean_volume_per_atom: Optional[float] = None  # Å^3/atom, NPT: over the logged steps of the second half
    mean_pressure: Optional[float] = None  # GPa, NPT: likewise (kinetic part included, as the barostat holds it)

    @property
    def drift_per_atom(self) -> float:
        """Total-energy change per atom over the run (eV/atom); the NVE conservation check."""
        return (self.final_total - self.initial_total) / self.num_atoms

    def line(self) -> str:
        text = (f"{self.thermostat.upper()} {self.steps} steps ({self.time_fs / 1000:.3f} ps), "
                f"mean T {self.mean_temperature:.1f} K")
        if self.thermostat == "nve":
            text += f", total energy drift {1000 * self.drift_per_atom:+.3f} meV/atom"
        if self.mean_volume_per_atom is not None:
            text += (f", second half: mean volume {self.mean_volume_per_atom:.4f} Å^3/atom, mean pressure "
                     f"{self.mean_pressure:+.3f} GPa (held at {self.pressure_GPa:g} GPa)")
        if self.max_force_std is not None:
            text += f", largest force spread {self.max_force_std:.3f} eV/Å"
        return text


def check_outputs(paths: Sequence[Optional[PathLike]], overwrite: bool = False,
                  how_to_allow: str = "overwrite=True") -> None:
    """Refuse output paths before any computation, so a refused run writes nothing (None entries are skipped).

    Two paths that are one file, or a folder, raise `ValueError`; without ``overwrite``, files that exist
    raise a one-line `FileExistsError` naming them and ``how_to_allow``, the switch that replaces them
    (``--overwrite`` on the command line).
    """
    paths = [Path(path) for path in paths if path is not None]
    if len(set(path.resolve() for path in paths)) < len(paths):
        raise ValueError(f"the trajectory and the log are the same file ({paths[0]}); give them different paths")
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give a file path for the output")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''} (an "
                              f"earlier run?); give other paths, or {how_to_allow} to replace "
                              f"{'it' if len(existing) == 1 else 'them'}")


def _kinetic_degrees_of_freedom(atoms: Atoms, thermostat: str) -> int:
    """The velocity components that carry kinetic energy in the run: what the logged temperature counts.

    The start removes centre-of-mass motion, and rotation when no direction is periodic; NVE keeps both
    at zero (the model's forces sum to zero and exert no torque), which leaves 3N - 3 in a periodic cell
    and 3N - 6 for a molecule (3N - 5 if linear). The Langevin bath (``langevin``, and the one of ``npt``)
    kicks every component, so all 3N reach its temperature. Constraints (ASE's count) reduce the 3N.
    """
    count = atoms.get_number_of_degrees_of_freedom()
    if thermostat in ("langevin", "npt"):
        return count
    count -= 3
    if not atoms.pbc.any():
        inertia = atoms.get_moments_of_inertia()
        count -= int((inertia > 1e-8 * inertia.max()).sum())  # 0 for one atom, 2 for a linear molecule
    return max(count, 0)


def _initial_velocities(atoms: Atoms, temperature_K: float, degrees_of_freedom: int, rng) -> None:
    """Maxwell-Boltzmann velocities without centre-of-mass motion (and rotation, for a structure with no
    periodic direction), rescaled so that 2 E_kin / (degrees_of_freedom k_B) is exactly ``temperature_K``."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)  # one rng.standard_normal((N, 3)) either way
    Stationary(atoms, preserve_temperature=False)
    if not atoms.pbc.any():
        with np.errstate(divide="ignore", invalid="ignore"):  # a linear molecule's zero moment; ASE selects 0 there
            ZeroRotation(atoms, preserve_temperature=False)
    kinetic, target = atoms.get_kinetic_energy(), 0.5 * degrees_of_freedom * units.kB * temperature_K
    atoms.set_momenta(atoms.get_momenta() * (np.sqrt(target / kinetic) if kinetic > 0 else 0.0))


def _check_npt(atoms: Atoms, friction_per_fs: float, barostat_fs: float, npt_cell: str) -> None:
    """Refuse an NPT run that cannot hold a pressure, before anything is drawn or written."""
    if npt_cell not in NPT_CELLS:
        raise ValueError(f"unknown npt_cell {npt_cell!r}; choose one of {list(NPT_CELLS)}")
    if not (friction_per_fs > 0 and barostat_fs > 0):
        raise ValueError(f"NPT needs positive time constants: the thermostat's 1/friction_per_fs (friction "
                         f"{friction_per_fs} 1/fs) and barostat_fs ({barostat_fs} fs); e.g. friction 0.01 "
                         f"(100 fs) and barostat 1000 fs")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise ValueError(f"NPT needs a structure periodic in all three directions with a 3D cell; this one has "
                         f"pbc={atoms.pbc.tolist()} and a cell of rank {atoms.cell.rank} (a molecule, slab or wire "
                         f"has no pressure to hold: use nve or langevin, or give a bulk cell)")
    if "stress" not in getattr(atoms.calc, "implemented_properties", ()):
        raise ValueError(f"NPT needs the stress, and the calculator {type(atoms.calc).__name__} does not "
                         f"compute it; use a calculator with stress (geognn's, for a periodic cell) or nve/langevin")


def _npt_dynamics(atoms: Atoms, timestep: float, temperature_K: float, pressure_GPa: float,
                  friction_per_fs: float, barostat_fs: float, npt_cell: str, rng):
    """ASE's `LangevinBAOAB`: Langevin dynamics of the atoms and Langevin-Hoover dynamics of the cell.

    Chosen for equilibrium volumes because it samples the isothermal-isobaric ensemble itself, not just
    its mean: Quigley and Probert, J. Chem. Phys. 120, 11432 (2004), https://doi.org/10.1063/1.1755657
    (Langevin-Hoover barostat), integrated by BAOAB, Leimkuhler and Matthews, J. Chem. Phys. 138, 174102
    (2013), https://doi.org/10.1063/1.4802990. Berendsen's weak coupling (NPTBerendsen) suppresses the
    volume fluctuations and is not an ensemble; ASE's Nose-Hoover-chain MTK integrators (IsotropicMTKNPT,
    MTKNPT; Martyna, Tobias and Klein 1994) are exact too, but deterministic: in a small crystal the cell
    rings at the barostat period for picoseconds, and their thermostat counts 3N degrees of freedom where
    a cell without centre-of-mass motion has 3N - 3 (3 % hot at 32 atoms). The Langevin bath kicks all 3N,
    is seeded like ``langevin``, and damps the cell's motion on ``barostat_fs``.
    """
    import warnings

    from ase.md.langevinbaoab import LangevinBAOAB

    with warnings.catch_warnings():
        # ASE announces its barostat-mass heuristic on every start; it is the documented behaviour, not news
        warnings.filterwarnings("ignore", message="Using heuristic P_mass")
        return LangevinBAOAB(atoms, timestep, temperature_K=temperature_K,
                             externalstress=-pressure_GPa * units.GPa,  # ASE's stress is minus the pressure
                             hydrostatic=npt_cell == "isotropic", T_tau=units.fs / friction_per_fs,
                             P_tau=barostat_fs * units.fs, rng=rng)


def _pressure_GPa(atoms: Atoms) -> float:
    """Minus a third of the stress trace, the kinetic (ideal-gas) part included: the pressure a barostat holds."""
    return float(-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa)


def run_md(atoms: Atoms, steps: int, timestep_fs: float = 0.5, temperature_K: float = 300.0,
           thermostat: str = "nve", friction_per_fs: float = 0.01, trajectory: Optional[PathLike] = None,
           logfile: Optional[PathLike] = None, interval: int = 10, seed: int = 0,
           progress: bool = True, overwrite: bool = False, *, pressure_GPa: Optional[float] = None,
           barostat_fs: float = 1000.0, npt_cell: str = "isotropic") -> MDSummary:
    """Velocity Verlet (``thermostat="nve"``), Langevin, or NPT MD starting exactly at ``temperature_K``.

    ``atoms.calc`` must be set. Every ``interval`` steps a frame goes to ``trajectory``
    (ASE .traj) and a line to ``logfile`` (step, time, potential, kinetic and total
    energy, temperature, for NPT the cell volume in Å^3 and the pressure in GPa, and for
    ensembles the largest per-atom force spread). An existing ``trajectory`` or ``logfile``
    raises `FileExistsError` before anything runs unless ``overwrite=True``.

    ``langevin``: ASE's Langevin bath at ``temperature_K``, friction ``friction_per_fs``.
    ``npt``: ASE's `LangevinBAOAB` holds ``temperature_K`` and ``pressure_GPa`` (default 0;
    ASE's sign: positive compresses) on a structure periodic in all three directions,
    through the calculator's stress. The atoms feel the same Langevin bath (time constant
    1/``friction_per_fs``, 100 fs by default); the cell's motion is damped on ``barostat_fs``
    and oscillates with a period of about a third of it (ASE's barostat-mass heuristic; 330 fs
    for 1000 fs in 32-atom EMT copper). ``npt_cell="isotropic"`` scales the
    cell (its shape kept), ``"full"`` lets its shape change too. The pressure logged and
    averaged includes the kinetic part (the barostat's target). The summary's mean volume
    per atom and mean pressure are over the logged steps of the second half of the run:
    start far from the equilibrium volume and the first half is the approach.

    The initial velocities are drawn from Maxwell-Boltzmann at ``temperature_K`` (seeded
    by ``seed``) and rescaled to exactly that temperature after removing centre-of-mass
    motion, and rotation when no direction is periodic, so the first logged temperature is
    the one asked for. The temperature is 2 E_kin / (f k_B), f counting the components that
    carry kinetic energy: 3N - 6 for a molecule in NVE (3N - 5 if linear), 3N - 3 for a
    periodic cell in NVE, 3N with the Langevin bath and in NPT (ASE's
    ``atoms.get_temperature()`` always counts 3N). The log's header line gives f.
    """
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if thermostat not in THERMOSTATS:
        raise ValueError(f"unknown thermostat {thermostat!r}; choose one of {list(THERMOSTATS)}")
    if steps < 1 or interval < 1 or not timestep_fs > 0 or temperature_K < 0:
        raise ValueError("steps and interval must be positive, the time step positive and the temperature >= 0")
    if thermostat != "npt" and pressure_GPa is not None:
        raise ValueError(f"a pressure is held only by thermostat='npt', not {thermostat!r}")
    if thermostat == "langevin" and not friction_per_fs > 0:
        raise ValueError(f"the Langevin friction must be positive, got {friction_per_fs} 1/fs (nve has none)")
    if atoms.calc is None:
        raise ValueError("the structure has no calculator; set atoms.calc = load_calculator(...)")
    npt = thermostat == "npt"
    if npt:
        pressure_GPa = 0.0 if pressure_GPa is None else float(pressure_GPa)
        _check_npt(atoms, friction_per_fs, barostat_fs, npt_cell)
    check_outputs([trajectory, logfile], overwrite)
    rng = np.random.default_rng(seed)
    degrees_of_freedom = _kinetic_degrees_of_freedom(atoms, thermostat)
    _initial_velocities(atoms, temperature_K, degrees_of_freedom, rng)
    timestep = timestep_fs * units.fs  # ASE's time unit is Å·sqrt(amu/eV), about 10.18 fs
    if thermostat == "nve":
        dynamics = VelocityVerlet(atoms, timestep=timestep)
    elif thermostat == "langevin":
        dynamics = Langevin(atoms, timestep=timestep, temperature_K=temperature_K,
                            friction=friction_per_fs / units.fs, rng=rng, fixcm=False)
    else:
        dynamics = _npt_dynamics(atoms, timestep, temperature_K, pressure_GPa, friction_per_fs, barostat_fs,
                                 npt_cell, rng)

    def time_fs() -> float:
        # from the integrator, so the log and summary show the time it simulated, not the one asked for
        return dynamics.get_time() / units.fs
    spread = "max_forces_std" if isinstance(atoms.calc, EnsembleCalculator) else None
    writer = None
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        writer = Trajectory(str(trajectory), "w", atoms)
    log = None
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        log = open(logfile, "w")
        log.write(f"# {thermostat.upper()}, T_K = 2 ekin / ({degrees_of_freedom} kB): {degrees_of_freedom} degrees "
                  f"of freedom carry kinetic energy")
        if npt:
            log.write(f"; ASE LangevinBAOAB at {pressure_GPa:g} GPa, {npt_cell} cell, thermostat "
                      f"{1 / friction_per_fs:g} fs, barostat {barostat_fs:g} fs; pressure_GPa includes the "
                      f"kinetic part")
        log.write("\n# step time_fs epot_eV ekin_eV etot_eV T_K" + (" volume_A3 pressure_GPa" if npt else "")
                  + (" max_force_std_eV/A" if spread else "") + "\n")
    temperatures, spreads, totals, logged_steps, volumes, pressures = [], [], [], [], [], []

    def record():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        totals.append(epot + ekin)
        temperatures.append(2 * ekin / (degrees_of_freedom * units.kB) if degrees_of_freedom else 0.0)
        logged_steps.append(dynamics.nsteps)
        extra = ""
        if npt:
            volumes.append(atoms.get_volume())
            pressures.append(_pressure_GPa(atoms))
            extra += f" {volumes[-1]:.4f} {pressures[-1]:.4f}"
        if spread:
            spreads.append(float(atoms.calc.results[spread]))
            extra += f" {spreads[-1]:.5f}"
        if log is not None:
            log.write(f"{dynamics.nsteps} {time_fs():.4f} {epot:.6f} {ekin:.6f} "
                      f"{epot + ekin:.6f} {temperatures[-1]:.2f}{extra}\n")
        if writer is not None:
            writer.write()

    bar = tqdm(total=steps, desc=f"md {atoms.get_chemical_formula()}", unit=" steps", disable=not progress,
               mininterval=1.0)
    dynamics.attach(record, interval=interval)
    dynamics.attach(lambda: bar.update(1) if dynamics.nsteps > 0 else None, interval=1)
    try:
        dynamics.run(steps)
        if dynamics.nsteps % interval:
            record()  # the last step, for the drift
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if log is not None:
            log.close()
    summary = MDSummary(thermostat, dynamics.nsteps, time_fs(), len(atoms), totals[0], totals[-1],
                        float(np.mean(temperatures)), max(spreads) if spreads else None)
    if npt:
        settled = np.asarray(logged_steps) >= dynamics.nsteps / 2  # the second half: the approach left out
        summary.pressure_GPa = pressure_GPa
        summary.mean_volume_per_atom = float(np.mean(np.asarray(volumes)[settled])) / len(atoms)
        summary.mean_pressure = float(np.mean(np.asarray(pressures)[settled]))
    return summary


@dataclass
class RelaxSummary:
    optimizer: str
    converged: bool
    steps: int
    initial_energy: float  # eV
    final_energy: float  # eV
    fmax: float  # eV/Å, largest force at the end
    target_fmax: float
    cell: bool

    def line(self) -> str:
        what = "positions and cell" if self.cell else "positions"
        state = "converged" if self.converged else "stopped before converging"
        return (f"{self.optimizer.upper()} ({what}) {state} after {self.steps} steps: energy {self.final_energy:.5f} eV "
                f"({self.final_energy - self.initial_energy:+.5f} eV), final fmax {self.fmax:.4f} eV/Å "
                f"(target {self.target_fmax} eV/Å)")


def run_relax(atoms: Atoms, fmax: float = 0.01, steps: int = 1000, optimizer: str = "bfgs", cell: bool = False,
              trajectory: Optional[PathLike] = None, logfile: Optional[PathLike] = None,
              progress: bool = True, overwrite: bool = False) -> RelaxSummary:
    """Relax positions (and, with ``cell=True``, the cell of a periodic structure) until the largest force is below ``fmax``.

    An existing ``trajectory`` or ``logfile`` raises `FileExistsError` before anything runs
    unless ``overwrite=True``, which replaces them.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if not fmax > 0 or steps < 1:
        raise ValueError("fmax and steps must be positive")
    if atoms.calc is None:
        raise ValueError("the structure has no calculator; set atoms.calc = load_calculator(...)")
    if cell and not atoms.pbc.any():
        raise ValueError("relaxing the cell needs the stress of a periodic structure; this one has no periodic "
                         "direction (drop --cell, or give a structure with a cell and pbc)")
    check_outputs([trajectory, logfile], overwrite)
    initial = atoms.get_potential_energy()
    target = FrechetCellFilter(atoms) if cell else atoms
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        Path(logfile).unlink(missing_ok=True)  # ASE's optimizers append to a log; overwrite=True replaces it
    kind = {"bfgs": BFGS, "fire": FIRE}[optimizer]
    runner = kind(target, trajectory=None if trajectory is None else str(trajectory),
                  logfile=None if logfile is None else str(logfile))
    bar = tqdm(total=steps, desc=f"relax {atoms.get_chemical_formula()}", unit=" steps", disable=not progress,
               mininterval=1.0)
    runner.attach(lambda: bar.update(1) if runner.nsteps > 0 else None, interval=1)
    try:
        converged = bool(runner.run(fmax=fmax, steps=steps))
    finally:
        bar.close()
    final_fmax = float(np.sqrt((target.get_forces() ** 2).sum(axis=1).max()))
    return RelaxSummary(optimizer, converged, runner.nsteps, initial, atoms.get_potential_energy(), final_fmax, fmax,
                        cell)


__all__ = ["load_calculator", "read_structure", "check_outputs", "run_md", "run_relax", "MDSummary",
           "RelaxSummary", "THERMOSTATS", "NPT_CELLS", "OPTIMIZERS"]
