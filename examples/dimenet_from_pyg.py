"""DimeNet++: energies and forces, the blocks on their own, and a PyG model's weights carried over.

    python examples/dimenet_from_pyg.py

1. `build_model("dimenet++")` on a molecule and a periodic cell (stress too).
2. The layers as a user would wire them into a model of their own: radial and
   spherical bases, triplets of the radius graph, one interaction block.
3. `DimeNetPP.from_pyg`: a `torch_geometric` DimeNet++ (needs torch-sparse)
   and its geognn copy give the same energies and forces.
"""

import importlib.util

import torch
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from geognn.data import atoms_to_data
from geognn.graph import radius_graph, triplets
from geognn.models import DimeNetPP, build_model
from geognn.nn import DimeNetPPInteraction, DimeNetRadialBasis, SphericalBasis, triplet_cos_angle

torch.manual_seed(0)

# 1. A small DimeNet++ (the paper's size: hidden_channels=128, num_blocks=4, int_emb_size=64, out_emb_channels=256).
model = build_model("dimenet++", output_init="glorot_orthogonal").double()
atoms = molecule("CH3CHO")
out = model(atoms_to_data(atoms, dtype=torch.float64), compute_forces=True)
print(f"DimeNet++, {sum(p.numel() for p in model.parameters()):,} parameters")
print(f"{atoms.get_chemical_formula()}: energy {out['energy'].item():+.6f} eV, "
      f"largest force {out['forces'].abs().max().item():.4f} eV/Å")
silicon = model(atoms_to_data(bulk("Si", "diamond", a=5.43), dtype=torch.float64), compute_stress=True)
print(f"Si (diamond, 2-atom cell): energy {silicon['energy'].item():+.6f} eV, "
      f"stress xx {silicon['stress'][0, 0, 0].item():+.2e} eV/Å³")

# 2. The blocks on their own: messages live on edges j -> i and are updated from edges k -> j.
pos = torch.tensor(atoms.positions, dtype=torch.float64)
edge_index = radius_graph(pos, 5.0)
edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
edge_len = edge_vec.norm(dim=-1)
idx_kj, idx_ji = triplets(edge_index, len(atoms))  # the line graph: edge kj sends to edge ji
rbf = DimeNetRadialBasis(num_radial=6, cutoff=5.0).double()(edge_len)  # [E, 6]
cos_angle = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji)  # cos ∠kji, [T]
sbf = SphericalBasis(num_spherical=7, num_radial=6, cutoff=5.0).double()(edge_len, cos_angle, idx_kj)  # [T, 42]
block = DimeNetPPInteraction(hidden_channels=16, int_emb_size=8, basis_emb_size=4, num_spherical=7, num_radial=6)
messages = torch.randn(edge_index.shape[1], 16, dtype=torch.float64)
updated = block.double()(messages, rbf, sbf, idx_kj, idx_ji)
print(f"\n{edge_index.shape[1]} edges, {idx_kj.numel()} triplets; one interaction block: {tuple(updated.shape)}")

# 3. A PyG model's weights, carried over.
if importlib.util.find_spec("torch_sparse") is None:
    print("\nPyG's DimeNet++ needs torch-sparse; skipping the from_pyg comparison")
else:
    from torch_geometric.nn.models import DimeNetPlusPlus, dimenet

    from geognn.graph import pyg_radius_graph

    # PyG 2.8 asks pyg-lib for its radius graph (not on PyPI); geognn's search finds the same pairs.
    dimenet.radius_graph = pyg_radius_graph
    theirs = DimeNetPlusPlus(hidden_channels=64, out_channels=1, num_blocks=2, int_emb_size=32, basis_emb_size=8,
                             out_emb_channels=128, num_spherical=7, num_radial=6,
                             output_initializer="glorot_orthogonal").double()
    ours = DimeNetPP.from_pyg(theirs)
    batch = Batch.from_data_list([atoms_to_data(molecule(name), dtype=torch.float64) for name in ("CH3CHO", "CH4", "HCOOH")])
    pos = batch.pos.clone().requires_grad_(True)
    energy = theirs(batch.z, pos, batch.batch).squeeze(-1)
    forces = -torch.autograd.grad(energy.sum(), pos)[0]
    mine = ours(batch, compute_forces=True)
    print(f"\nPyG DimeNet++ energy   {energy.tolist()}")
    print(f"geognn (from_pyg)      {mine['energy'].tolist()}")
    print(f"largest difference: energy {(mine['energy'] - energy).abs().max().item():.1e} eV, "
          f"forces {(mine['forces'] - forces).abs().max().item():.1e} eV/Å")
