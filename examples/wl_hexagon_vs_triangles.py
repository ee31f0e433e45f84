"""The 1-WL limit of message passing: a 6-cycle and two disjoint triangles.

    python examples/wl_hexagon_vs_triangles.py

Six carbon atoms as a regular hexagon and six as two equilateral triangles, every bond 1.45 Å.
Every atom has two bonded neighbours in both, so 1-WL colour refinement (written out below)
gives both graphs the same colour histogram, and a message-passing network on the bond graph,
which is at most as expressive as 1-WL (Xu et al. 2019; Morris et al. 2019), must give both the
same energy. GPS is the exception that proves the rule: its random-walk encodings count
returns after 3 steps, which exist in a triangle and not in a hexagon. With 3D coordinates the
two shapes differ in their distances (2.51 Å across the hexagon, nothing beyond 1.45 Å in a
triangle), and every 3D model separates them.
"""

from collections import Counter

import numpy as np
import torch
from ase import Atoms

from geognn.data import atoms_to_data
from geognn.graph import bond_graph
from geognn.models import build_model

BOND = 1.45  # Å, inside the covalent-radius bond tolerance of two carbons, far outside for second neighbours


def hexagon() -> Atoms:
    angles = np.arange(6) * np.pi / 3
    return Atoms("C6", positions=np.stack([BOND * np.cos(angles), BOND * np.sin(angles), np.zeros(6)], 1))


def two_triangles() -> Atoms:
    radius = BOND / np.sqrt(3)
    angles = np.arange(3) * 2 * np.pi / 3
    triangle = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.zeros(3)], 1)
    return Atoms("C6", positions=np.concatenate([triangle, triangle + [10.0, 0.0, 0.0]]))


def wl_histogram(z, edge_index, rounds: int = 3) -> Counter:
    """1-WL colour refinement: a colour becomes (own colour, multiset of the neighbours' colours)."""
    colours = [int(x) for x in z]
    neighbours = [[] for _ in colours]
    for j, i in edge_index.T.tolist():
        neighbours[i].append(j)
    for _ in range(rounds):
        colours = [hash((colours[i], tuple(sorted(colours[j] for j in neighbours[i])))) for i in range(len(colours))]
    return Counter(colours)


def main() -> None:
    shapes = {"hexagon": hexagon(), "two triangles": two_triangles()}
    graphs = {name: bond_graph(torch.tensor(a.numbers), torch.tensor(a.positions))[0] for name, a in shapes.items()}
    for name, edges in graphs.items():
        print(f"{name}: {edges.shape[1] // 2} bonds, degrees {sorted(torch.bincount(edges[1]).tolist())}")
    same = wl_histogram(torch.tensor(shapes["hexagon"].numbers), graphs["hexagon"]) == wl_histogram(
        torch.tensor(shapes["two triangles"].numbers), graphs["two triangles"])
    print(f"1-WL colour histograms equal: {same}")

    torch.manual_seed(0)
    for name in ("gcn", "sage", "gat", "gin", "mpnn", "gps", "schnet", "painn", "egnn", "dimenet++", "nequip"):
        options = {"output_init": "glorot_orthogonal"} if name == "dimenet++" else {}  # not zero at random weights
        model = build_model(name, **options).double().eval()
        with torch.no_grad():
            energy = [float(model(atoms_to_data(a, dtype=torch.float64))["energy"]) for a in shapes.values()]
        kind = "2D" if not model.uses_positions else "3D"
        print(f"{name:>10} ({kind}): energy {energy[0]: .8f} vs {energy[1]: .8f}, "
              f"{'separated' if abs(energy[0] - energy[1]) > 1e-9 else 'identical'}")


if __name__ == "__main__":
    main()
