"""geognn's EGNN against a plain EGNN written straight from the paper, same size, same batch, same process.

The plain model follows Satorras et al. (ICML 2021, eqs. 3-6) as one would write
it from the paper in PyTorch: per edge, concatenate (h_i, h_j, |x_ij|²) and run
the two-layer edge MLP φ_e; the coordinate MLP φ_x on each message; sum the
messages and position updates per receiver (index_add_); the node MLP φ_h on
(h_i, m_i) with a residual. It uses geognn's radius graph (given, as for the
PyG peers) and, to compute the same function, the same cutoff envelope on every
message and the same normalised coordinate update x_ij / (|x_ij| + 1). Both
models are at the paper's QM9 size: 128 channels, 7 layers, coordinate updates
on, no radial basis; the plain one gets geognn's weights, and the energies and
forces are checked equal before timing. Timed interleaved (medians): an energy +
force train step (forces with ``create_graph=True``, backward of an MSE loss)
and inference (energies and forces), float32, 32 QM9 molecules by default.

    python benchmarks/egnn_vs_plain.py
    python benchmarks/egnn_vs_plain.py --device cuda --rounds 30
"""

from __future__ import annotations

import torch
from _peers import PeerRunner, qm9_batch, random_targets, run_peer_benchmark
from torch import nn

SIZE = {"hidden_channels": 128, "num_layers": 7, "num_radial": 0, "update_coords": True, "vector_channels": 0}


def mlp(sizes, activate_last=False):
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2 or activate_last:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class PlainEGNNLayer(nn.Module):
    def __init__(self, F):
        super().__init__()
        self.phi_e = mlp([2 * F + 1, F, F], activate_last=True)
        self.phi_x = mlp([F, F, 1])
        self.phi_h = mlp([2 * F, F, F])

    def forward(self, h, x, edge_index, envelope):
        j, i = edge_index
        diff = x[i] - x[j]  # x_i - x_j
        sq = (diff * diff).sum(-1, keepdim=True)
        m = self.phi_e(torch.cat([h[i], h[j], sq], dim=-1))
        dx = diff / (sq.sqrt() + 1.0) * self.phi_x(m) * envelope
        m_i = torch.zeros_like(h).index_add_(0, i, m * envelope)
        x = x + torch.zeros_like(x).index_add_(0, i, dx)
        h = h + self.phi_h(torch.cat([h, m_i], dim=-1))
        return h, x


class PlainEGNN(nn.Module):
    """Embedding -> EGNN layers -> per-atom MLP -> sum; the same envelope as geognn's on each message."""

    def __init__(self, F, num_layers, cutoff, edge_index):
        super().__init__()
        self.embedding = nn.Embedding(101, F)
        self.layers = nn.ModuleList(PlainEGNNLayer(F) for _ in range(num_layers))
        self.readout = mlp([F, F // 2, 1])
        self.cutoff, self.edge_index = cutoff, edge_index

    def forward(self, z, pos, batch):
        j, i = self.edge_index
        d = (pos[j] - pos[i]).norm(dim=-1, keepdim=True) / self.cutoff  # DimeNet's polynomial envelope, p = 6
        envelope = torch.where(d < 1, 1 - 28 * d**6 + 48 * d**7 - 21 * d**8, torch.zeros_like(d))
        h, x = self.embedding(z), pos
        for layer in self.layers:
            h, x = layer(h, x, self.edge_index, envelope)
        node_energy = self.readout(h).squeeze(-1)
        return torch.zeros(int(batch.max()) + 1, dtype=pos.dtype, device=pos.device).index_add_(0, batch, node_energy)

    @torch.no_grad()
    def copy_from(self, ours):
        """Take geognn's EGNN weights (same layer order, same concatenation order)."""
        self.embedding.weight.copy_(ours.embedding.weight)
        for plain, layer in zip(self.layers, ours.layers):
            pairs = [(plain.phi_e, layer.edge_mlp), (plain.phi_x, layer.coord_mlp), (plain.phi_h, layer.node_mlp)]
            for mine, theirs in pairs:
                for a, b in zip([m for m in mine if isinstance(m, nn.Linear)], [m for m in theirs if isinstance(m, nn.Linear)]):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
        for a, b in zip([m for m in self.readout if isinstance(m, nn.Linear)],
                        [m for m in ours.readout if isinstance(m, nn.Linear)]):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


class PlainRunner(PeerRunner):
    def energy_and_forces(self):
        pos = self.batch.pos.detach().requires_grad_(True)
        energy = self.model(self.batch.z, pos, self.batch.batch)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=self.model.training)[0]
        return energy, forces

    def energy(self):
        return self.model(self.batch.z, self.batch.pos, self.batch.batch)


def setup(args):
    from geognn.models import build_model

    device = torch.device(args.device)
    batch = qm9_batch(args).to(device)
    torch.manual_seed(0)
    ours = build_model("egnn", **SIZE).to(device)
    for layer in ours.layers:  # geognn starts φ_x near zero (gain 0.001); make the check see the coordinates
        nn.init.xavier_uniform_(layer.coord_mlp[-1].weight)
    edge_index = ours.build_graph(batch.pos, batch.batch, batch.num_graphs).edge_index
    plain = PlainEGNN(SIZE["hidden_channels"], SIZE["num_layers"], ours.config.cutoff, edge_index)
    plain.copy_from(ours)
    plain = plain.to(device)
    targets = random_targets(batch, device)
    runners = {"plain": PlainRunner("plain", plain, batch, targets), "geognn": PeerRunner("geognn", ours, batch, targets)}
    return device, batch, edge_index.shape[1], runners


def main() -> None:
    run_peer_benchmark(__doc__, __file__, "plain", setup,
                       (("train_step", "train step (E + F)"), ("inference", "energy + forces")), same_weights=True)


if __name__ == "__main__":
    main()
