"""Periodic radius graph: geognn (torch-cluster) against ASE's neighbour list.

    python benchmarks/radius_graph.py [--threads 1] [--sheared-only]

Rattled diamond-Si supercells of growing size, cutoff 5 Å. Both libraries
return the same edge set (checked on every size before timing); reported
are median wall times and the ratio ASE / geognn (above 1: geognn faster).

Then skewed bases: the same lattice and atoms with the cell given as M @ cell for
strongly sheared unimodular M. The edges (with shifts mapped back, s = s' @ M) must
equal the reduced cell's; reported is the time of the sheared cell over the reduced.
"""

import argparse
import platform
import time

import numpy as np
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list

from geognn.graph import periodic_radius_graph


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sheared-only", action="store_true", help="only the skewed-basis table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), cutoff {args.cutoff} Å")
    if args.sheared_only:
        return sheared(args)
    print("| atoms | edges | geognn (ms) | ASE (ms) | ASE / geognn |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for repeat in (1, 2, 3, 4, 6, 8):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=repeat)
        pos = torch.tensor(atoms.positions)
        cell = torch.tensor(atoms.cell[:])
        pbc = torch.tensor(atoms.pbc)

        edge_index, shift = periodic_radius_graph(pos, args.cutoff, cell, pbc)
        i, j, S = neighbor_list("ijS", atoms, args.cutoff)
        ours = {(a, b, *s) for a, b, s in zip(edge_index[0].tolist(), edge_index[1].tolist(), shift.long().tolist())}
        theirs = {(a, b, *s) for a, b, s in zip(j.tolist(), i.tolist(), S.tolist())}
        assert ours == theirs, "edge sets differ"

        t_ours = median_time(lambda: periodic_radius_graph(pos, args.cutoff, cell, pbc), args.repeats)
        t_ase = median_time(lambda: neighbor_list("ijS", atoms, args.cutoff), args.repeats)
        print(f"| {len(atoms)} | {len(i)} | {1e3 * t_ours:.1f} | {1e3 * t_ase:.1f} | {t_ase / t_ours:.2f} |")

    sheared(args)


SHEARS = {
    "[[1,0,0],[3,1,0],[-2,1,1]]": [[1, 0, 0], [3, 1, 0], [-2, 1, 1]],
    "[[1,0,0],[6,1,0],[-5,4,1]]": [[1, 0, 0], [6, 1, 0], [-5, 4, 1]],
}


def sheared(args):
    print()
    print("| atoms | shear M | edges | reduced cell (ms) | sheared cell (ms) | sheared / reduced |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for repeat in (2, 3, 4):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=repeat)
        pos = torch.tensor(atoms.positions)
        cell = torch.tensor(atoms.cell[:])
        pbc = torch.tensor(atoms.pbc)
        reference = periodic_radius_graph(pos, args.cutoff, cell, pbc)
        edges = {(a, b, *s) for a, b, s in zip(*reference[0].tolist(), reference[1].long().tolist())}
        for label, M in SHEARS.items():
            skewed = torch.tensor(M, dtype=cell.dtype) @ cell
            edge_index, shift = periodic_radius_graph(pos, args.cutoff, skewed, pbc)
            mapped = (shift.long() @ torch.tensor(M)).tolist()
            assert {(a, b, *s) for a, b, s in zip(*edge_index.tolist(), mapped)} == edges, "edge sets differ"
            t_reduced = median_time(lambda: periodic_radius_graph(pos, args.cutoff, cell, pbc), args.repeats)
            t_skewed = median_time(lambda: periodic_radius_graph(pos, args.cutoff, skewed, pbc), args.repeats)
            print(f"| {len(atoms)} | {label} | {len(edges)} | {1e3 * t_reduced:.1f} | {1e3 * t_skewed:.1f} | "
                  f"{t_skewed / t_reduced:.2f} |")


if __name__ == "__main__":
    main()
