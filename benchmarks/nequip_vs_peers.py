"""geognn's NequIP against the nequip package's, matched size, same batch, same process.

The peer is `nequip.model.NequIPGNNModel` (nequip 0.19), built as its own
code builds it: l_max 2, 32 features, 4 layers, cutoff 5 Å, 8 Bessel
functions with the p = 6 polynomial cutoff, radial MLP of one hidden layer
of 128, avg_num_neighbors 15, species H, C, N, O, F. geognn's model is
``build_model("nequip", ...)`` with the same hyperparameters; the script
checks that the parameter counts agree. Both get the same 32 QM9 molecules
and the same edges (geognn's radius graph, handed to nequip as its
``edge_index``), float32, and are timed interleaved:

* train step: forward, forces with ``create_graph=True``, backward of an MSE
  loss on energies and forces (nequip's model also returns the virial; that
  is its own code path, not disabled here);
* inference: energies and forces in eval mode.

Peak memory of one train step is measured in a fresh process per model.
nequip is not a geognn dependency; install it beside geognn to run this:

    pip install "nequip==0.19.*"          # keeps torch 2.13 and e3nn 0.6
    python benchmarks/nequip_vs_peers.py
    python benchmarks/nequip_vs_peers.py --device cuda --rounds 30

On a machine without the QM9 source, ``--save-molecules FILE`` here and
``--molecules FILE`` there run the same molecules (``--batch-size`` up to
the number saved).
"""

from __future__ import annotations

import warnings

import torch
from _peers import PeerRunner, qm9_batch, random_targets, run_peer_benchmark

SPECIES = (1, 6, 7, 8, 9)
SIZE = dict(l_max=2, num_features=32, num_layers=4, cutoff=5.0, avg_num_neighbors=15.0)


def build_models(device):
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    from geognn.models import build_model

    set_global_state()  # nequip requires it (it also sets torch's default dtype to float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NequIPGNNModel(
            seed=0, model_dtype="float32", r_max=SIZE["cutoff"], type_names=["H", "C", "N", "O", "F"],
            num_layers=SIZE["num_layers"], l_max=SIZE["l_max"], num_features=SIZE["num_features"],
            num_bessels=8, polynomial_cutoff_p=6, radial_mlp_depth=1, radial_mlp_width=128,
            avg_num_neighbors=SIZE["avg_num_neighbors"], per_type_energy_scales=1.0, per_type_energy_shifts=0.0,
        )
    torch.manual_seed(0)
    ours = build_model("nequip", **SIZE, num_radial=8, envelope_exponent=6, radial_mlp=(128,), atomic_numbers=SPECIES)
    torch.set_default_dtype(torch.float32)
    return theirs.to(device), ours.float().to(device)


class NequIPRunner(PeerRunner):
    """nequip's model on the batch, with geognn's edges."""

    def __init__(self, model, batch, edge_index, targets):
        super().__init__("nequip", model, batch, targets)
        types = torch.full((max(SPECIES) + 1,), -1, dtype=torch.long, device=batch.z.device)
        types[list(SPECIES)] = torch.arange(len(SPECIES), device=batch.z.device)
        self.nequip_input = {
            "pos": batch.pos, "edge_index": edge_index, "atom_types": types[batch.z], "batch": batch.batch,
            "num_atoms": torch.bincount(batch.batch),
        }

    def energy_and_forces(self):
        out = self.model(dict(self.nequip_input))
        return out["total_energy"].squeeze(-1), out["forces"]


def setup(args):
    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    theirs, ours = build_models(device)
    edge_index = ours.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index
    targets = random_targets(batch, device)
    runners = {"nequip": NequIPRunner(theirs, batch, edge_index, targets),
               "geognn": PeerRunner("geognn", ours, batch, targets)}
    return device, batch, edge_index.shape[1], runners


def main() -> None:
    run_peer_benchmark(__doc__, __file__, "nequip", setup,
                       (("train_step", "train step (E + F)"), ("inference", "energy + forces")))


if __name__ == "__main__":
    main()
