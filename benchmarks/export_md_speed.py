"""MD steps per second through the exported model (metatomic-ase, TorchScript) against `GeoGNNCalculator`.

    python benchmarks/export_md_speed.py [--models egnn mace] [--sides 3 7 15] [--rounds 3] [--dtype float64]

The same freshly initialised model (weights do not change the cost) drives ASE's
Velocity Verlet twice: once through geognn's own calculator (eager PyTorch, its
neighbour search), once exported with `geognn.export.to_metatomic` and run by
metatomic-ase's calculator (TorchScript, metatomic's neighbour lists from vesin).
Periodic water boxes of `md_scaling.py` (side 3, 7, 15: 81, 1,029 and 10,125
atoms); one step is one energy with forces and stress. The two calculators
alternate round by round on the same box; reported are the median seconds per step
and the ratio (above 1: the exported path is faster). Energies and forces are
checked equal first.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from md_scaling import water_box

from _peers import hardware
from geognn.calculator import GeoGNNCalculator
from geognn.export import to_metatomic
from geognn.models import build_model

# The recipes' architectures for water-like data (cutoff 5 Å), as the other MD benchmarks use.
MODELS = {
    "egnn": {"hidden_channels": 64, "num_layers": 4, "update_coords": False},
    "schnet": {"hidden_channels": 64, "num_filters": 64, "num_interactions": 3},
    "painn": {"hidden_channels": 64, "num_layers": 3},
    "nequip": {"num_features": 32, "num_layers": 3},
    "mace": {"hidden_irreps": "64x0e + 64x1o", "num_interactions": 2, "atomic_numbers": [1, 8]},
}


def seconds_per_step(atoms, calculator, steps: int) -> float:
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
    dynamics.run(1)  # warm-up: first call, caches
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sides", nargs="+", type=int, default=[3, 7, 15])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from metatomic_ase import MetatomicCalculator

    dtype = getattr(torch, args.dtype)
    print(f"# {hardware(torch.device('cpu'))}, torch {torch.__version__}, {args.dtype}")
    print("| model | atoms | GeoGNNCalculator s/step | exported (metatomic-ase) s/step | exported speed ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, **MODELS[name]).to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calculators = {"geognn": GeoGNNCalculator(model), "exported": MetatomicCalculator(to_metatomic(model))}
        for side in args.sides:
            atoms = water_box(side)
            thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
            check = {}
            for key, calculator in calculators.items():
                probe = atoms.copy()
                probe.calc = calculator
                check[key] = (probe.get_potential_energy(), probe.get_forces())
            energy_gap = abs(check["geognn"][0] - check["exported"][0]) / max(1.0, abs(check["geognn"][0]))
            force_gap = np.abs(check["geognn"][1] - check["exported"][1]).max()
            assert energy_gap < 1e-6 and force_gap < 1e-5, (name, side, energy_gap, force_gap)
            steps = max(2, min(50, 20_000 // len(atoms)))
            samples = {key: [] for key in calculators}
            for round_ in range(args.rounds):
                for key in (list(calculators) if round_ % 2 == 0 else list(calculators)[::-1]):
                    samples[key].append(seconds_per_step(atoms.copy(), calculators[key], steps))
            ours, exported = (statistics.median(samples[key]) for key in ("geognn", "exported"))
            print(f"| {name} | {len(atoms):,} | {ours:.4f} | {exported:.4f} | {ours / exported:.2f} |", flush=True)


if __name__ == "__main__":
    main()
