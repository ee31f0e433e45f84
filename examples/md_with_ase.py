"""Molecular dynamics of a QM9 molecule with the geognn ASE calculator, written to a trajectory.

    python examples/md_with_ase.py runs/qm9_xtb_egnn                 # NVE, 2,000 steps of 0.5 fs, float64
    python examples/md_with_ase.py runs/qm9_xtb_egnn --langevin 300  # Langevin thermostat at 300 K
    python examples/md_with_ase.py runs/seed0 runs/seed1 runs/seed2  # an ensemble: logs the force spread

A checkpoint is a run folder or file from `geognn train`; the energy+force
model of `train/qm9_xtb_egnn.yaml` is the one meant for MD (a QM9 energy
model never saw a non-equilibrium geometry). Without one, a freshly
initialised EGNN stands in: the trajectory is then not chemistry, but
energy conservation (the check printed at the end) holds all the same,
because forces are the exact gradient of a smooth energy.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import Trajectory, read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from geognn.calculator import EnsembleCalculator, GeoGNNCalculator
from geognn.models import build_model

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "qm9_xtb_sample.extxyz"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoints", nargs="*", help="checkpoint files or run folders (several: an ensemble)")
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--timestep", type=float, default=0.5, help="fs")
parser.add_argument("--temperature", type=float, default=300.0, help="initial temperature, K")
parser.add_argument("--langevin", type=float, metavar="K", help="thermostat temperature (default: NVE)")
parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
parser.add_argument("--out", default="runs/examples/md.traj", help="ASE trajectory file")
args = parser.parse_args()
Path(args.out).parent.mkdir(parents=True, exist_ok=True)

atoms = read(SAMPLE, index=5)  # C7H10N2 at its QM9 geometry
if len(args.checkpoints) > 1:
    calc = EnsembleCalculator.from_checkpoints(args.checkpoints, dtype=args.dtype)
elif args.checkpoints:
    calc = GeoGNNCalculator.from_checkpoint(args.checkpoints[0], dtype=args.dtype)
else:
    print("no checkpoint given: a freshly initialised EGNN stands in (see the docstring)")
    torch.manual_seed(0)
    calc = GeoGNNCalculator(build_model("egnn", hidden_channels=32, num_layers=3), dtype=args.dtype)
atoms.calc = calc

thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
Stationary(atoms)  # no drift of the centre of mass
ZeroRotation(atoms)
# With translation and rotation removed a free molecule keeps 3N - 6 kinetic degrees of freedom
# (ASE's get_temperature divides by 3N); rescale so that the run starts at exactly the asked T.
degrees_of_freedom = 3 * len(atoms) - 6


def temperature():
    return 2 * atoms.get_kinetic_energy() / (degrees_of_freedom * units.kB)


atoms.set_velocities(atoms.get_velocities() * np.sqrt(args.temperature / temperature()))
if args.langevin is None:
    dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
else:
    dynamics = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.langevin, friction=0.01 / units.fs,
                        rng=np.random.default_rng(1))

totals = []
trajectory = Trajectory(args.out, "w", atoms)
dynamics.attach(trajectory.write, interval=10)


def report():
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    totals.append(epot + ekin)
    if dynamics.nsteps % max(args.steps // 10, 1) == 0:
        spread = calc.results.get("max_forces_std")
        extra = f"  max force std {spread:.3f} eV/Å" if spread is not None else ""
        print(f"step {dynamics.nsteps:6d}  t {dynamics.nsteps * args.timestep:8.1f} fs  potential energy {epot:12.5f} eV  "
              f"total {epot + ekin:12.5f} eV  T {temperature():6.1f} K{extra}")


dynamics.attach(report, interval=1)
print(f"{atoms.get_chemical_formula()}, {len(atoms)} atoms, {args.steps} steps of {args.timestep} fs, "
      f"{'NVE' if args.langevin is None else f'Langevin {args.langevin} K'}, {args.dtype}, "
      f"T = 2 E_kin / ({degrees_of_freedom} k_B)")
dynamics.run(args.steps)
trajectory.close()

# Drift: the trend of the total energy (a least-squares line through it, times the run length).
# Fluctuation: its largest excursion from the start, which for Velocity Verlet shrinks as timestep².
per_atom = (np.array(totals) - totals[0]) / len(atoms)
drift = abs(np.polyfit(np.arange(len(per_atom)), per_atom, 1)[0]) * args.steps
print(f"total energy over {args.steps} steps: drift {drift:.1e} eV/atom, largest fluctuation "
      f"{np.abs(per_atom).max():.1e} eV/atom" + ("" if args.langevin is None else " (Langevin: not conserved by design)"))
print(f"trajectory ({len(read(args.out, index=':'))} frames) written to {args.out}")
