"""SchNet's continuous-filter convolution (Schütt et al., J. Chem. Phys. 2018) on the shared base.

One interaction block, with x_j the sender's features and r_ij its distance:

    W_ij = Dense(ssp(Dense(e(r_ij)))) · C(r_ij)           filter from the Gaussian expansion e
    m_i  = 1/n_avg Σ_j (Lin_1 x_j) ⊙ W_ij                 continuous-filter convolution
    v_i  = Dense(ssp(Lin_2 m_i))                          added to x_i by the model

with ssp(x) = softplus(x) − log 2 and C the cosine cutoff (as PyG's ``CFConv``;
SchNet's paper has no cutoff function). In MPNN terms: ``message`` is the
filtered sender feature, ``aggregate`` the (averaged) sum, ``update`` the two
dense maps.
"""

from __future__ import annotations

from typing import List

from torch import Tensor, nn

from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import ShiftedSoftplus


class SchNetInteraction(ScalarVectorMessagePassing):
    """One SchNet interaction block: [N, F] features and the edges' Gaussian expansion -> update [N, F].

    Args:
        hidden_channels: F, width of the atom features.
        num_filters: width of the filters and of the convolved features.
        num_gaussians: size of the distance expansion the filters are made from.
        avg_num_neighbors: the neighbour sum is divided by this (1: SchNet's plain sum).
    """

    def __init__(self, hidden_channels: int, num_filters: int, num_gaussians: int, avg_num_neighbors: float = 1.0):
        super().__init__(avg_num_neighbors)
        self.hidden_channels, self.num_filters, self.num_gaussians = hidden_channels, num_filters, num_gaussians
        self.filter = nn.Sequential(nn.Linear(num_gaussians, num_filters), ShiftedSoftplus(),
                                    nn.Linear(num_filters, num_filters))
        self.lin_1 = nn.Linear(hidden_channels, num_filters, bias=False)
        self.lin_2 = nn.Linear(num_filters, hidden_channels)
        self.act = ShiftedSoftplus()
        self.lin_3 = nn.Linear(hidden_channels, hidden_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot weights and zero biases, as SchNetPack and PyG initialise SchNet.
        for linear in (self.filter[0], self.filter[2], self.lin_1, self.lin_2, self.lin_3):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        """
        Args:
            x: [N, hidden_channels] atom features.
            edge_index: [2, E] (sender j, receiver i).
            edge_rbf: [E, num_gaussians] distance expansion.
            edge_cutoff: [E] smooth cutoff of the distance (1 at 0, 0 at the cutoff).

        Returns:
            [N, hidden_channels], the update the model adds to ``x``.
        """
        if x.shape[-1] != self.hidden_channels or edge_rbf.shape[-1] != self.num_gaussians:
            raise ValueError(f"expected x [N, {self.hidden_channels}] and edge_rbf [E, {self.num_gaussians}], "
                             f"got {list(x.shape)} and {list(edge_rbf.shape)}")
        weights = self.filter(edge_rbf) * edge_cutoff.unsqueeze(-1)  # [E, num_filters]
        sender, receiver = edge_index[0], edge_index[1]
        messages = self.message(self.lin_1(x).index_select(0, sender), weights)
        return self.update(self.aggregate(messages, receiver, dim_size=x.shape[0]))

    def message(self, sender_j: Tensor, weights: Tensor) -> List[Tensor]:
        return [sender_j * weights]

    def update(self, inputs: List[Tensor]) -> Tensor:
        return self.lin_3(self.act(self.lin_2(inputs[0])))  # inputs[0]: [N, num_filters]

    def extra_repr(self) -> str:
        return (f"hidden_channels={self.hidden_channels}, num_filters={self.num_filters}, "
                f"num_gaussians={self.num_gaussians}, avg_num_neighbors={float(self.avg_num_neighbors)}")
