"""geognn's DimeNet++ (or DimeNet) against PyG's, same weights, same batch, same process.

PyG's `DimeNetPlusPlus` (the paper's size: hidden 128, 4 blocks, int_emb 64,
basis_emb 8, out_emb 256, 7 spherical, 6 radial, cutoff 5 Å) gets random
weights (glorot-orthogonal output layers, so forces are not zero); geognn's
model is `DimeNetPP.from_pyg` of it, and both must give the same energies
before anything is timed. ``--model dimenet`` does the same for PyG's
`DimeNet` at its paper's size (hidden 128, 6 blocks, 8 bilinear, 7 spherical,
6 radial, cutoff 5 Å) and `DimeNet.from_pyg`. Both run on one batch of QM9
molecules drawn with a fixed seed, in float32:

* train step: forward, forces with ``create_graph=True``, backward of an MSE
  loss on energies and forces (no optimizer step: it is the same for both);
* inference: energies and forces in eval mode (what MD asks for);
* energy only: forward under ``torch.no_grad()``.

Runs are interleaved (PyG, geognn, PyG, ...) after warm-up; medians are
reported. Peak memory of one train step is measured in a fresh process per
model: on CPU the rise of the resident set's high-water mark (VmHWM) over
the resident set before the step, on CUDA ``torch.cuda.max_memory_allocated``.

PyG 2.8 builds its radius graph through pyg-lib, which is not on PyPI; the
benchmark points PyG's call at geognn's search (`geognn.graph.pyg_radius_graph`), which
returns the same pairs; both models build the same graph the same way.

On CPU the memory allocator matters as much as the kernels: with glibc's
defaults every large temporary is a fresh mmap whose pages fault in on first
touch, which costs PyG (more and larger temporaries) far more than geognn.
Run it both ways; the header prints the MALLOC_* settings and LD_PRELOAD in
force:

    python benchmarks/dimenet_vs_pyg.py                       # CPU, 32 molecules, 10 rounds
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456 \
        python benchmarks/dimenet_vs_pyg.py                   # glibc keeps freed memory mapped
    python benchmarks/dimenet_vs_pyg.py --device cuda --rounds 30
    python benchmarks/dimenet_vs_pyg.py --model dimenet --rounds 5   # about 20 minutes here
"""

from __future__ import annotations

import torch
from _peers import PeerRunner, PyGRunner, qm9_batch, random_targets, run_peer_benchmark

PAPER = {  # each paper's size, in PyG's names
    "dimenet++": dict(hidden_channels=128, out_channels=1, num_blocks=4, int_emb_size=64, basis_emb_size=8,
                      out_emb_channels=256, num_spherical=7, num_radial=6, cutoff=5.0),
    "dimenet": dict(hidden_channels=128, out_channels=1, num_blocks=6, num_bilinear=8, num_spherical=7,
                    num_radial=6, cutoff=5.0),
}


# Largest relative energy or force difference (float32) accepted as one function. PyG evaluates its
# spherical Bessel functions in the model's dtype, from closed forms that cancel at short distances
# for high orders; geognn evaluates them in float64 whatever the dtype. On the benchmark's batch the
# paper-size DimeNet's float32 forces then differ from PyG's float64 ones by 1.3e-4 (relative to the
# largest force) and geognn's by 2.3e-5: the two float32 models differ by PyG's rounding.
AGREEMENT = 5e-4


def patch_pyg_radius() -> None:
    from torch_geometric.nn.models import dimenet

    from geognn.graph import pyg_radius_graph

    dimenet.radius_graph = pyg_radius_graph


def build_models(seed: int, name: str = "dimenet++"):
    from torch_geometric.nn.models import DimeNet as PyGDimeNet
    from torch_geometric.nn.models import DimeNetPlusPlus

    from geognn.models import DimeNet, DimeNetPP

    patch_pyg_radius()
    torch.manual_seed(seed)
    theirs, ours = (DimeNetPlusPlus, DimeNetPP) if name == "dimenet++" else (PyGDimeNet, DimeNet)
    pyg = theirs(**PAPER[name], output_initializer="glorot_orthogonal")
    return pyg, ours.from_pyg(pyg)


def setup(args):
    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    pyg, ours = build_models(args.seed, args.model)
    pyg, ours = pyg.to(device), ours.to(device)
    edges = ours.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index.shape[1]
    targets = random_targets(batch, device)
    return device, batch, edges, {"pyg": PyGRunner("pyg", pyg, batch, targets),
                                  "geognn": PeerRunner("geognn", ours, batch, targets)}


def main() -> None:
    run_peer_benchmark(__doc__, __file__, "pyg", setup,
                       (("train_step", "train step (E + F)"), ("inference", "energy + forces"),
                        ("energy_only", "energy only")), same_weights=True,
                       add_arguments=lambda parser: parser.add_argument(
                           "--model", choices=sorted(PAPER), default="dimenet++", help="which of the two models"),
                       tolerance=AGREEMENT)


if __name__ == "__main__":
    main()
