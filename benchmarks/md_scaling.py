"""MD steps per second against the number of atoms, with the geognn ASE calculator on CPU.

    python benchmarks/md_scaling.py [--threads 2] [--dtype float32] [--sides 1 2 3 5 7 10 15]

Periodic boxes of water at liquid density (a cubic grid of side³ randomly
oriented molecules, 3.1 Å apart), from 3 to 10,125 atoms; EGNN with the recipes'
architecture (64 channels, 4 layers, cutoff 5 Å, no coordinate updates),
freshly initialised (the weights do not change the cost). One MD step is a
Velocity-Verlet step of 0.5 fs: one radius graph, one energy, forces by
autograd, stress (periodic cell). Reported: steps per second, the cost per
atom and step (flat when the cost is linear in the number of atoms), and the
share of the radius graph, with ASE's `neighbor_list` on the same box as the
peer for that part.
"""

import argparse
import platform
import time

import numpy as np
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list
from scipy.spatial.transform import Rotation

from geognn.calculator import GeoGNNCalculator
from geognn.models import build_model

SPACING = 3.1  # Å between water molecules: about 1 g/cm³


def water_box(side: int, seed: int = 0) -> Atoms:
    """side³ randomly oriented waters on a cubic grid filling a periodic box, slightly rattled."""
    rng = np.random.default_rng(seed)
    sites = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])
    num_molecules = len(sites)
    water = molecule("H2O")
    water.positions -= water.get_center_of_mass()
    positions = [site * SPACING + water.positions @ Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().T
                 for site in sites]
    atoms = Atoms("H2O" * num_molecules, positions=np.concatenate(positions), cell=[side * SPACING] * 3, pbc=True)
    atoms.rattle(0.02, seed=seed)
    return atoms


def time_md(atoms: Atoms, steps: int) -> float:
    """Seconds per Velocity-Verlet step, after one warm-up step."""
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.run(1)
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def best_time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1, 2, 3, 5, 7, 10, 15],
                        help="molecules along each box edge (3 side³ atoms)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=10.0, help="rough time spent on MD per size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("egnn", hidden_channels=64, num_layers=4, cutoff=5.0, update_coords=False)
    calc = GeoGNNCalculator(model, device="cpu", dtype=args.dtype)
    cutoff = model.config.cutoff
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"EGNN 64x4, cutoff {cutoff} Å, {args.dtype}, water at {SPACING} Å spacing")
    print("| atoms | edges | MD steps/s | µs per atom-step | radius graph (ms) | share of step | "
          "ASE neighbor_list (ms) | ASE / geognn graph |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for side in args.sides:
        atoms = water_box(side)
        thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
        atoms.calc = calc
        atoms.get_forces()  # first call: allocations
        rough = best_time(lambda: calc.calculate(atoms, ["forces"]), repeats=1)
        step = time_md(atoms, steps=max(2, min(200, int(args.seconds / rough))))

        pos = torch.tensor(atoms.positions, dtype=calc.dtype)
        cell = torch.tensor(atoms.cell[:], dtype=calc.dtype).unsqueeze(0)
        pbc = torch.tensor(atoms.pbc).unsqueeze(0)
        batch = torch.zeros(len(atoms), dtype=torch.long)
        graph = model.build_graph(pos, batch, 1, cell, pbc)
        own = best_time(lambda: model.build_graph(pos, batch, 1, cell, pbc))
        peer = best_time(lambda: neighbor_list("ij", atoms, cutoff))
        # float32 positions may place a pair within rounding of the cutoff on the other side than ASE's float64.
        distances = neighbor_list("d", atoms, cutoff + 1e-4)
        borderline = int((np.abs(distances - cutoff) < 1e-4).sum())
        if abs(int((distances < cutoff).sum()) - graph.edge_index.shape[1]) > borderline:
            raise RuntimeError("ASE and geognn disagree on the number of edges")
        print(f"| {len(atoms)} | {graph.edge_index.shape[1]} | {1 / step:.1f} | {step / len(atoms) * 1e6:.0f} | "
              f"{own * 1e3:.1f} | {own / step:.0%} | {peer * 1e3:.1f} | {peer / own:.2f} |", flush=True)


if __name__ == "__main__":
    main()
