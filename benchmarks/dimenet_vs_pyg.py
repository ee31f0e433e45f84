"""geognn's DimeNet++ against PyG's, same weights, same batch, same process.

PyG's `DimeNetPlusPlus` (the paper's size: hidden 128, 4 blocks, int_emb 64,
basis_emb 8, out_emb 256, 7 spherical, 6 radial, cutoff 5 Å) gets random
weights (glorot-orthogonal output layers, so forces are not zero); geognn's
model is `DimeNetPP.from_pyg` of it, and both must give the same energies
before anything is timed. Both run on one batch of QM9 molecules drawn with a
fixed seed, in float32:

* train step: forward, forces with ``create_graph=True``, backward of an MSE
  loss on energies and forces (no optimizer step: it is the same for both);
* inference: energies and forces in eval mode (what MD asks for);
* energy only: forward under ``torch.no_grad()``.

Runs are interleaved (PyG, geognn, PyG, ...) after warm-up; medians are
reported. Peak memory of one train step is measured in a fresh process per
model: on CPU the rise of the resident set's high-water mark (VmHWM) over
the resident set before the step, on CUDA ``torch.cuda.max_memory_allocated``.

PyG 2.8 builds its radius graph through pyg-lib, which is not on PyPI; the
benchmark points PyG's call at torch-cluster, which returns the same pairs.

On CPU the memory allocator matters as much as the kernels: with glibc's
defaults every large temporary is a fresh mmap whose pages fault in on first
touch, which costs PyG (more and larger temporaries) far more than geognn.
Run it both ways; the header prints the MALLOC_* settings and LD_PRELOAD in
force:

    python benchmarks/dimenet_vs_pyg.py                       # CPU, 32 molecules, 10 rounds
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456 \
        python benchmarks/dimenet_vs_pyg.py                   # glibc keeps freed memory mapped
    python benchmarks/dimenet_vs_pyg.py --device cuda --rounds 30
"""

from __future__ import annotations

import json

import torch
from _peers import (allocator_settings, hardware, interleaved_medians, measure_memory, parse_arguments,
                    peak_train_step_bytes, qm9_batch, report)

PAPER = dict(hidden_channels=128, out_channels=1, num_blocks=4, int_emb_size=64, basis_emb_size=8,
             out_emb_channels=256, num_spherical=7, num_radial=6, cutoff=5.0)


def patch_pyg_radius() -> None:
    import torch_cluster
    from torch_geometric.nn.models import dimenet

    dimenet.radius_graph = lambda pos, r, batch=None, max_num_neighbors=32: torch_cluster.radius_graph(
        pos, r, batch, max_num_neighbors=max_num_neighbors)


def build_models(seed: int):
    from torch_geometric.nn.models import DimeNetPlusPlus

    from geognn.models import DimeNetPP

    patch_pyg_radius()
    torch.manual_seed(seed)
    pyg = DimeNetPlusPlus(**PAPER, output_initializer="glorot_orthogonal")
    return pyg, DimeNetPP.from_pyg(pyg)


class Runner:
    """One model's three measured calls on one batch."""

    def __init__(self, name, model, batch, targets):
        self.name, self.model, self.batch = name, model, batch
        self.energy_target, self.force_target = targets

    def energy_and_forces(self, create_graph: bool):
        if self.name == "pyg":
            pos = self.batch.pos.clone().requires_grad_(True)
            energy = self.model(self.batch.z, pos, self.batch.batch).squeeze(-1)
            forces = -torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)[0]
            return energy, forces
        out = self.model(self.batch, compute_forces=True)
        return out["energy"], out["forces"]

    def train_step(self):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        energy, forces = self.energy_and_forces(create_graph=True)
        loss = (energy - self.energy_target).pow(2).mean() + (forces - self.force_target).pow(2).mean()
        loss.backward()

    def inference(self):
        self.model.eval()
        energy, forces = self.energy_and_forces(create_graph=False)
        return energy.detach(), forces.detach()

    def energy_only(self):
        self.model.eval()
        with torch.no_grad():
            if self.name == "pyg":
                return self.model(self.batch.z, self.batch.pos, self.batch.batch)
            return self.model(self.batch)["energy"]


def setup(args):
    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    pyg, ours = build_models(args.seed)
    pyg, ours = pyg.to(device), ours.to(device)
    generator = torch.Generator().manual_seed(1)
    targets = (torch.randn(batch.num_graphs, generator=generator).to(device),
               torch.randn(batch.num_nodes, 3, generator=generator).to(device))
    return device, batch, {"pyg": Runner("pyg", pyg, batch, targets), "geognn": Runner("geognn", ours, batch, targets)}


def check_same_outputs(runners) -> dict:
    (e_pyg, f_pyg), (e_ours, f_ours) = runners["pyg"].inference(), runners["geognn"].inference()
    errors = {"energy": float((e_pyg - e_ours).abs().max() / e_pyg.abs().max()),
              "forces": float((f_pyg - f_ours).abs().max() / f_pyg.abs().max())}
    if max(errors.values()) > 1e-4:
        raise SystemExit(f"the two models disagree (relative errors {errors}); not timing different functions")
    return errors


def measure_time(args) -> dict:
    device, batch, runners = setup(args)
    agreement = check_same_outputs(runners)
    results = interleaved_medians(runners, ("train_step", "inference", "energy_only"), args.warmup, args.rounds, device)
    edges = int(runners["geognn"].model.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index.shape[1])
    return {"times_s": results, "agreement": agreement, "atoms": int(batch.num_nodes), "edges": edges}


def peak_memory_child(args) -> None:
    """In a fresh process: peak memory of one train step of ``args.memory_child``."""
    device, _, runners = setup(args)
    print(json.dumps({"peak_bytes": peak_train_step_bytes(runners[args.memory_child], device)}))


def main() -> None:
    args = parse_arguments(__doc__, "pyg")
    if args.memory_child:
        return peak_memory_child(args)

    result = measure_time(args)
    result["peak_train_step_bytes"] = measure_memory(__file__, ("pyg", "geognn"), args.memory_repeats)
    allocator = allocator_settings()
    result.update(device=hardware(torch.device(args.device)), torch=torch.__version__,
                  batch_size=args.batch_size, rounds=args.rounds, dtype="float32", allocator=allocator)
    report(result, args, "pyg", "PyG", (("train_step", "train step (E + F)"), ("inference", "energy + forces"),
                                         ("energy_only", "energy only")))
    print(f"agreement (relative, float32): energy {result['agreement']['energy']:.1e}, "
          f"forces {result['agreement']['forces']:.1e}")


if __name__ == "__main__":
    main()
