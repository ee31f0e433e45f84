"""Tensor-product layers in a model of your own, mixed with EGNN, and the NequIP model.

1. A hand-wired block: species embedding -> SphericalEdgeEmbedding ->
   TensorProductConv -> EquivariantGate, giving scalars and l = 1, 2 features.
2. The l = 1 part viewed as EGNN's vector channels ``v`` [N, F, 3]
   (`split_scalars_vectors`), passed through an `EGNNLayer`, and joined back
   into an irreps tensor (`join_scalars_vectors`).
3. The whole thing rotated: every output turns with its exact Wigner matrix.
4. `build_model("nequip")`: energies and forces, and the fused tensor product
   checked against e3nn's own `o3.TensorProduct` with the same weights.

    python examples/tensor_product_layers.py
"""

import torch
from ase.build import molecule
from e3nn import o3

from geognn.data import atoms_to_data
from geognn.graph import radius_graph
from geognn.models import build_model
from geognn.nn import (EGNNLayer, EquivariantGate, SphericalEdgeEmbedding, TensorProductConv,
                       join_scalars_vectors, species_one_hot, split_scalars_vectors, wigner_d)

DTYPE = torch.float64  # so that the symmetry check below is exact to ~1e-12
torch.manual_seed(0)
CUTOFF, F = 4.0, 8

atoms = molecule("CH3CH2OH")
data = atoms_to_data(atoms, dtype=DTYPE)
species = torch.bucketize(data.z, torch.tensor([1, 6, 8]))  # H, C, O -> 0, 1, 2
node_attr = species_one_hot(species, 3, DTYPE)
edge_index = radius_graph(data.pos, CUTOFF)

embedding = SphericalEdgeEmbedding(l_max=2, num_radial=8, cutoff=CUTOFF).to(DTYPE)
hidden = o3.Irreps(f"{F}x0e + {F}x1o + {F}x2e")
gate = EquivariantGate(hidden, f"{F}x0e", embedding.irreps_sh)  # which extra gate scalars the conv must make
conv = TensorProductConv(f"{F}x0e", gate.irreps_in, embedding.irreps_sh, "3x0e",  # the species one-hot
                         num_radial=8, radial_mlp=(32,), avg_num_neighbors=edge_index.shape[1] / len(atoms)).to(DTYPE)
to_scalars = o3.Linear("3x0e", f"{F}x0e").to(DTYPE)
egnn = EGNNLayer(F, vector_channels=F, update_coords=False).to(DTYPE)
print(f"conv: {conv.irreps_in} -> {conv.irreps_out} with {len(conv.tp.instructions)} uvu paths; gate -> {gate.irreps_out}")


def block(pos):
    edge_sh, edge_radial = embedding(pos[edge_index[0]] - pos[edge_index[1]])
    x = gate(conv(to_scalars(node_attr), node_attr, edge_index, edge_sh, edge_radial))  # [N, hidden.dim]
    h, v = split_scalars_vectors(x, gate.irreps_out)  # [N, F] and [N, F, 3] (the 1o channels)
    h, _, v = egnn(h, pos, edge_index, v=v)  # an EGNN step on the same features
    joined, irreps = join_scalars_vectors(h, v)  # back to "Fx0e + Fx1o"
    return joined, irreps


rotation = o3.rand_matrix(dtype=DTYPE)
with torch.no_grad():
    out, irreps = block(data.pos)
    rotated, _ = block(data.pos @ rotation.T)
error = (rotated - out @ wigner_d(irreps, rotation).T).abs().max()
print(f"mixed block output {irreps}: rotation error {float(error):.1e}")
assert error < 1e-10

model = build_model("nequip", l_max=2, num_features=16, num_layers=3, cutoff=5.0, atomic_numbers=(1, 6, 8)).to(DTYPE)
result = model(data, compute_forces=True)
energy, forces = result["energy"].detach(), result["forces"].detach()
print(f"NequIP ({sum(p.numel() for p in model.parameters()):,} parameters): "
      f"energy {float(energy):.4f} eV, |F|max {float(forces.abs().max()):.4f} eV/Å")

tp = model.convolutions[1].tp  # geognn's fused product; e3nn's with the same instructions:
x1, x2, w = (torch.randn(5, dim, dtype=DTYPE) for dim in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel))
difference = (tp(x1, x2, w) - tp.reference(DTYPE)(x1, x2, w)).abs().max()
print(f"fused tensor product vs e3nn.o3.TensorProduct: max difference {float(difference):.1e}")
assert difference < 1e-12
