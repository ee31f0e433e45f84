"""Relax a distorted QM9 molecule with ASE's BFGS and the geognn calculator.

    python examples/optimize_with_ase.py runs/qm9_xtb_egnn     # the energy+force model of train/qm9_xtb_egnn.yaml
    python examples/optimize_with_ase.py runs/qm9_xtb_egnn --fmax 0.005

The molecule starts from its QM9 geometry with every coordinate displaced by
0.1 Å (seeded) and is relaxed until the largest force is below ``--fmax``.
Without a checkpoint a freshly initialised EGNN stands in, which shows the
mechanics but not chemistry.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from ase.io import read
from ase.optimize import BFGS

from geognn.calculator import GeoGNNCalculator
from geognn.models import build_model

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "qm9_xtb_sample.extxyz"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder from `geognn train`")
parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
parser.add_argument("--out", default="runs/examples/opt.traj", help="ASE trajectory of the relaxation")
args = parser.parse_args()
Path(args.out).parent.mkdir(parents=True, exist_ok=True)

reference = read(SAMPLE, index=10)  # C6H10N2O at its QM9 (B3LYP) geometry
if args.checkpoint:
    calc = GeoGNNCalculator.from_checkpoint(args.checkpoint, dtype="float64")
else:
    print("no checkpoint given: a freshly initialised EGNN stands in (see the docstring)")
    torch.manual_seed(0)
    calc = GeoGNNCalculator(build_model("egnn", hidden_channels=32, num_layers=3), dtype="float64")

atoms = reference.copy()
atoms.rattle(0.1, seed=0)
atoms.calc = calc
start = atoms.get_potential_energy()
print(f"{atoms.get_chemical_formula()}: energy {start:.4f} eV, largest force "
      f"{np.linalg.norm(atoms.get_forces(), axis=1).max():.3f} eV/Å after the distortion")

optimizer = BFGS(atoms, trajectory=args.out, logfile=None)
converged = optimizer.run(fmax=args.fmax, steps=1000)
fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
print(f"BFGS {'converged' if converged else 'stopped'} after {optimizer.nsteps} steps: energy "
      f"{atoms.get_potential_energy():.4f} eV ({atoms.get_potential_energy() - start:+.4f} eV), largest force {fmax:.4f} eV/Å")

# Bond lengths of the relaxed molecule against the QM9 geometry (no alignment needed: distances are invariant).
bonded = (reference.get_all_distances() < 1.6) & ~np.eye(len(atoms), dtype=bool)
change = np.abs(atoms.get_all_distances() - reference.get_all_distances())[bonded]
print(f"bond lengths differ from QM9's B3LYP geometry by {change.mean():.3f} Å on average ({change.max():.3f} Å at most); "
      f"relaxation written to {args.out}")
