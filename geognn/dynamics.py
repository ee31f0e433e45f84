"""Molecular dynamics and geometry optimisation with a trained checkpoint: what ``geognn md`` and ``geognn relax`` run.

    from geognn.dynamics import load_calculator, read_structure, run_md, run_relax

    atoms = read_structure("molecule.xyz")
    atoms.calc = load_calculator(["runs/qm9_xtb_egnn"], dtype="float64")
    summary = run_md(atoms, steps=2000, timestep_fs=0.5, temperature_K=300, trajectory="runs/md/md.traj")
    print(summary.line())      # NVE: total-energy drift per atom

Several checkpoints make an `EnsembleCalculator`: the MD log then carries the
committee's largest per-atom force spread at every logged step, and the
summary its maximum. Everything here is ASE (Velocity Verlet, Langevin, BFGS,
FIRE, FrechetCellFilter) driven through the geognn calculator; this module uses
the calculator and ASE only, never the training code.
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
THERMOSTATS = ("nve", "langevin")
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

    @property
    def drift_per_atom(self) -> float:
        """Total-energy change per atom over the run (eV/atom); the NVE conservation check."""
        return (self.final_total - self.initial_total) / self.num_atoms

    def line(self) -> str:
        text = (f"{self.thermostat.upper()} {self.steps} steps ({self.time_fs / 1000:.3f} ps), "
                f"mean T {self.mean_temperature:.1f} K")
        if self.thermostat == "nve":
            text += f", total energy drift {1000 * self.drift_per_atom:+.3f} meV/atom"
        if self.max_force_std is not None:
            text += f", largest force spread {self.max_force_std:.3f} eV/Å"
        return text


def run_md(atoms: Atoms, steps: int, timestep_fs: float = 0.5, temperature_K: float = 300.0,
           thermostat: str = "nve", friction_per_fs: float = 0.01, trajectory: Optional[PathLike] = None,
           logfile: Optional[PathLike] = None, interval: int = 10, seed: int = 0,
           progress: bool = True) -> MDSummary:
    """Velocity Verlet (``thermostat="nve"``) or Langevin MD from Maxwell-Boltzmann velocities at ``temperature_K``.

    ``atoms.calc`` must be set. Every ``interval`` steps a frame goes to ``trajectory``
    (ASE .traj) and a line to ``logfile`` (step, time, potential, kinetic and total
    energy, temperature, and for ensembles the largest per-atom force spread).
    """
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    if thermostat not in THERMOSTATS:
        raise ValueError(f"unknown thermostat {thermostat!r}; choose one of {list(THERMOSTATS)}")
    if steps < 1 or interval < 1 or not timestep_fs > 0 or temperature_K < 0:
        raise ValueError("steps and interval must be positive, the time step positive and the temperature >= 0")
    if atoms.calc is None:
        raise ValueError("the structure has no calculator; set atoms.calc = load_calculator(...)")
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    timestep = timestep_fs * units.fs  # ASE's time unit is Å·sqrt(amu/eV), about 10.18 fs
    if thermostat == "nve":
        dynamics = VelocityVerlet(atoms, timestep=timestep)
    else:
        dynamics = Langevin(atoms, timestep=timestep, temperature_K=temperature_K,
                            friction=friction_per_fs / units.fs, rng=rng, fixcm=False)

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
        log.write("# step time_fs epot_eV ekin_eV etot_eV T_K" + (" max_force_std_eV/A" if spread else "") + "\n")
    temperatures, spreads, totals = [], [], []

    def record():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        totals.append(epot + ekin)
        temperatures.append(atoms.get_temperature())
        extra = ""
        if spread:
            spreads.append(float(atoms.calc.results[spread]))
            extra = f" {spreads[-1]:.5f}"
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
    return MDSummary(thermostat, dynamics.nsteps, time_fs(), len(atoms), totals[0], totals[-1],
                     float(np.mean(temperatures)), max(spreads) if spreads else None)


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
              progress: bool = True) -> RelaxSummary:
    """Relax positions (and, with ``cell=True``, the cell of a periodic structure) until the largest force is below ``fmax``."""
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
    initial = atoms.get_potential_energy()
    target = FrechetCellFilter(atoms) if cell else atoms
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
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


__all__ = ["load_calculator", "read_structure", "run_md", "run_relax", "MDSummary", "RelaxSummary",
           "THERMOSTATS", "OPTIMIZERS"]
