"""Build a molecule with ASE and print the energy and forces of an EGNN model.

    python examples/egnn_energy_forces.py

The model is freshly initialised (training arrives with `geognn train`), so
the numbers are not physical; what this shows is the path every model takes:
ase.Atoms -> Data -> radius graph -> EGNN layers -> energy, forces = -dE/dpos.
"""

import torch
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from geognn.data import atoms_to_data
from geognn.models import build_model
from geognn.testing import assert_equivariant

torch.manual_seed(0)
model = build_model("egnn").double().eval()  # float64 for exact checks; float32 by default
print(f"EGNN with {sum(p.numel() for p in model.parameters()):,} parameters, cutoff {model.config.cutoff} Å")

atoms = molecule("CH3CHO")
out = model(atoms_to_data(atoms, dtype=torch.float64), compute_forces=True)
print(f"\n{atoms.get_chemical_formula()}: energy {out['energy'].item():.6f} eV")
for symbol, force in zip(atoms.get_chemical_symbols(), out["forces"].detach()):
    print(f"  {symbol:2s} force [eV/Å] {force[0]:+.6f} {force[1]:+.6f} {force[2]:+.6f}")
print(f"  sum of forces (zero by translation invariance): {out['forces'].sum(0).abs().max().item():.1e}")

# Several structures at once, periodic ones with stress.
crystals = Batch.from_data_list([atoms_to_data(bulk(s, "rocksalt", a=a), dtype=torch.float64)
                                 for s, a in (("NaCl", 5.64), ("MgO", 4.21))])
out = model(crystals, compute_forces=True, compute_stress=True)
print(f"\nNaCl, MgO energies {out['energy'].tolist()} eV; NaCl stress diagonal "
      f"{out['stress'][0].diagonal().tolist()} eV/Å³")

# The equivariance test kit on the same model.
batch = Batch.from_data_list([atoms_to_data(molecule(n), dtype=torch.float64) for n in ("CH3CHO", "H2O", "HCF3")])
errors = assert_equivariant(model, batch, call_kwargs={"compute_forces": True})
print(f"\nlargest float64 equivariance error over rotations, reflections, translations, "
      f"permutations: {max(errors.values()):.1e}")
