"""The 2D baselines: bond graphs from geometry, and what a bond-graph model cannot see.

    python examples/bond_graph_baselines.py

Perceives the bonds of ethanol from covalent radii, then turns its O-H group about the C-O bond:
the bond graph does not change, so a 2D model (GIN) gives both conformers the same energy, while a
3D model (SchNet) tells them apart. Asking the 2D model for forces raises a clear error.
"""

import torch
from ase.build import molecule

from geognn.data import atoms_to_data
from geognn.graph import bond_orders, bonds_with_lengths
from geognn.models import build_model

ethanol = molecule("CH3CH2OH")
z, pos = torch.tensor(ethanol.numbers), torch.tensor(ethanol.positions)
edge_index, _, length = bonds_with_lengths(z, pos)  # both directions of each bond
orders = bond_orders(z, edge_index, length)
symbols = ethanol.get_chemical_symbols()
for (j, i), order, d in zip(edge_index.T.tolist(), orders.tolist(), length.tolist()):
    if j < i:
        print(f"bond {symbols[j]}{j}-{symbols[i]}{i}: order {order}, {d:.3f} Å")

# Turn the hydroxyl H about the C-O bond by 120 degrees (same bonds, new geometry).
o = symbols.index("O")
c = next(i for j, i in edge_index.T.tolist() if j == o and symbols[i] == "C")
h = next(i for j, i in edge_index.T.tolist() if j == o and symbols[i] == "H")
c2 = next(i for j, i in edge_index.T.tolist() if j == c and symbols[i] == "C")
turned = ethanol.copy()
turned.set_dihedral(c2, c, o, h, ethanol.get_dihedral(c2, c, o, h) + 120.0, indices=[h])

torch.manual_seed(0)
for name in ("gin", "schnet"):
    model = build_model(name).double().eval()
    with torch.no_grad():
        energies = [float(model(atoms_to_data(a, dtype=torch.float64))["energy"]) for a in (ethanol, turned)]
    print(f"{name}: energy {energies[0]:.6f} vs {energies[1]:.6f} (difference {energies[1] - energies[0]:.2e})")

try:
    build_model("gin")(atoms_to_data(ethanol), compute_forces=True)
except ValueError as error:
    print("gin forces:", error)
