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

import json
import warnings

import torch
from _peers import (allocator_settings, hardware, interleaved_medians, measure_memory, parse_arguments,
                    peak_train_step_bytes, qm9_batch, report)

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


class Runner:
    """One model's measured calls on one batch."""

    def __init__(self, name, model, batch, edge_index, targets):
        self.name, self.model, self.batch, self.edge_index = name, model, batch, edge_index
        self.energy_target, self.force_target = targets
        types = torch.full((max(SPECIES) + 1,), -1, dtype=torch.long, device=batch.z.device)
        types[list(SPECIES)] = torch.arange(len(SPECIES), device=batch.z.device)
        self.nequip_input = {
            "pos": batch.pos, "edge_index": edge_index, "atom_types": types[batch.z], "batch": batch.batch,
            "num_atoms": torch.bincount(batch.batch),
        }

    def energy_and_forces(self):
        if self.name == "nequip":
            out = self.model(dict(self.nequip_input))
            return out["total_energy"].squeeze(-1), out["forces"]
        out = self.model(self.batch, compute_forces=True)
        return out["energy"], out["forces"]

    def train_step(self):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        energy, forces = self.energy_and_forces()
        loss = (energy - self.energy_target).pow(2).mean() + (forces - self.force_target).pow(2).mean()
        loss.backward()

    def inference(self):
        self.model.eval()
        energy, forces = self.energy_and_forces()
        return energy.detach(), forces.detach()


def setup(args):
    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    theirs, ours = build_models(device)
    edge_index = ours.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index
    generator = torch.Generator().manual_seed(1)
    targets = (torch.randn(batch.num_graphs, generator=generator).to(device),
               torch.randn(batch.num_nodes, 3, generator=generator).to(device))
    runners = {"nequip": Runner("nequip", theirs, batch, edge_index, targets),
               "geognn": Runner("geognn", ours, batch, edge_index, targets)}
    return device, batch, edge_index, runners


def main() -> None:
    args = parse_arguments(__doc__, "nequip")
    if args.memory_child:
        device, _, _, runners = setup(args)
        print(json.dumps({"peak_bytes": peak_train_step_bytes(runners[args.memory_child], device)}))
        return

    device, batch, edge_index, runners = setup(args)
    counts = {name: sum(p.numel() for p in runner.model.parameters()) for name, runner in runners.items()}
    if counts["nequip"] != counts["geognn"]:
        print(f"warning: parameter counts differ: {counts}")
    times = interleaved_medians(runners, ("train_step", "inference"), args.warmup, args.rounds, device)
    result = {
        "times_s": times, "parameters": counts, "atoms": int(batch.num_nodes), "edges": int(edge_index.shape[1]),
        "peak_train_step_bytes": measure_memory(__file__, ("nequip", "geognn"), args.memory_repeats),
        "device": hardware(device), "torch": torch.__version__, "batch_size": args.batch_size,
        "rounds": args.rounds, "dtype": "float32", "allocator": allocator_settings(),
    }
    report(result, args, "nequip", "nequip", (("train_step", "train step (E + F)"), ("inference", "energy + forces")))


if __name__ == "__main__":
    main()
