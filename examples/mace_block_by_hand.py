"""A MACE layer wired by hand from geognn's layers, checked against the model and under rotations.

    python examples/mace_block_by_hand.py

One MACE layer is an interaction (two-body messages A_i, with the species skip
term), a symmetric contraction of A_i with itself up to `correlation` factors
(many-body features B_i), a linear map, and a readout. This script builds a
two-layer `MACE` model, then recomputes its energy with the layers called one
by one, and rotates the molecule to show the energy is invariant and the
vector features rotate with their Wigner matrices.
"""

import torch
from ase.build import molecule
from e3nn import o3

from geognn.data import atoms_to_data
from geognn.graph import radius_graph
from geognn.models import build_model
from geognn.nn import MACEInteraction, MACEProductBlock, SphericalEdgeEmbedding, wigner_d

torch.manual_seed(0)
elements = (1, 6, 8)
model = build_model("mace", hidden_irreps="8x0e + 8x1o", max_ell=2, correlation=3, num_interactions=2,
                    atomic_numbers=elements, avg_num_neighbors=6.0).double()
data = atoms_to_data(molecule("CH3CHO"), dtype=torch.float64)


def energy_by_hand(pos):
    """The model's energy, one layer call at a time (the same modules, so the same weights)."""
    edge_index = radius_graph(pos, model.config.cutoff)  # [2, E], sender j -> receiver i
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    species = torch.tensor([elements.index(int(z)) for z in data.z])
    one_hot = torch.nn.functional.one_hot(species, len(elements)).double()
    embedding: SphericalEdgeEmbedding = model.edge_embedding
    edge_sh, edge_radial = embedding(edge_vec)  # Y_lm(r̂_ij) [E, 9], Bessel basis × envelope [E, 8]
    x = model.embedding(one_hot)  # [N, 8] scalars from the species
    per_atom = torch.zeros(len(species), dtype=torch.float64)
    features = []
    for interaction, product, readout in zip(model.interactions, model.products, model.readouts):
        interaction: MACEInteraction
        product: MACEProductBlock
        a, sc = interaction(x, one_hot, edge_index, edge_sh, edge_radial)  # A_i [N, 8x0e+8x1o+8x2e], skip term
        x = product(a, species, sc)  # B_i contracted up to degree 3, linear, plus skip
        features.append(x)
        per_atom = per_atom + readout(x)  # [N]
    per_atom = per_atom * model.energy_scale + model.energy_shift + model.atomic_reference[data.z]
    return per_atom.sum(), features


energy, features = energy_by_hand(data.pos)
expected = model(data)["energy"][0]
print(f"energy by hand {float(energy):.12f} eV, model {float(expected):.12f} eV")
assert torch.allclose(energy, expected, rtol=1e-12, atol=1e-12)

rotation = o3.rand_matrix(dtype=torch.float64)
rotated_energy, rotated_features = energy_by_hand(data.pos @ rotation.T)
irreps = model.products[0].irreps_out  # 8x0e + 8x1o after the first layer
error = (rotated_features[0] - features[0] @ wigner_d(irreps, rotation).T).abs().max()
print(f"rotated: energy changes by {float((rotated_energy - energy).abs()):.1e} eV, "
      f"first-layer features ({irreps}) rotate with their Wigner matrix to {float(error):.1e}")
assert abs(float(rotated_energy - energy)) < 1e-10 and error < 1e-10
