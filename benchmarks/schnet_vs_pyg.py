"""geognn's SchNet against PyG's `torch_geometric.nn.models.SchNet`, same size, same batch, same process.

Both at PyG's default size (128 features, 128 filters, 6 interactions, 50
Gaussians, cutoff 10 Å); geognn's model is ``SchNet.from_pyg`` of PyG's, so
the weights are the same and so are the parameter counts. Both get the same
32 QM9 molecules, float32, timed interleaved (medians): an energy + force
train step (forces with ``create_graph=True``, backward of an MSE loss) and
inference (energies and forces). PyG's radius search goes through pyg-lib,
which is not on PyPI: PyG's model gets geognn's edges and computes the
distances from the positions itself; geognn builds its graph inside the timed
step. The two must give the same energies and forces before anything is
timed. Peak memory of one train step in fresh processes.

    python benchmarks/schnet_vs_pyg.py
    python benchmarks/schnet_vs_pyg.py --device cuda --rounds 30
"""

from __future__ import annotations

import torch
from _peers import PeerRunner, PyGRunner, qm9_batch, random_targets, run_peer_benchmark


class FixedEdges(torch.nn.Module):
    """Stands in for PyG's ``RadiusInteractionGraph``: given edges, distances from the positions."""

    def __init__(self, edge_index):
        super().__init__()
        self.edge_index = edge_index

    def forward(self, pos, batch):
        row, col = self.edge_index
        return self.edge_index, (pos[row] - pos[col]).norm(dim=-1)


def setup(args):
    from torch_geometric.nn.models import SchNet as PyGSchNet

    from geognn.models import SchNet

    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    torch.manual_seed(0)
    theirs = PyGSchNet(hidden_channels=128, num_filters=128, num_interactions=6, num_gaussians=50, cutoff=10.0)
    ours = SchNet.from_pyg(theirs)
    theirs, ours = theirs.to(device), ours.to(device)
    edge_index = ours.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index
    theirs.interaction_graph = FixedEdges(edge_index)  # distances (and so forces) still from the positions
    targets = random_targets(batch, device)
    runners = {"pyg": PyGRunner("pyg", theirs, batch, targets), "geognn": PeerRunner("geognn", ours, batch, targets)}
    return device, batch, edge_index.shape[1], runners


def main() -> None:
    run_peer_benchmark(__doc__, __file__, "pyg", setup,
                       (("train_step", "train step (E + F)"), ("inference", "energy + forces")), same_weights=True)


if __name__ == "__main__":
    main()
