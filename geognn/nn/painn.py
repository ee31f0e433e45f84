"""PaiNN's message and update blocks (Schütt, Unke & Gastegger, ICML 2021) on the shared base.

Scalars ``h`` [N, F] and vectors ``v`` [N, F, 3], with r̂_ij the unit vector
of ``edge_vec = pos[j] - pos[i]``, e(r_ij) a radial basis and f_c the cosine cutoff:

message (eq. 7-8), per edge j -> i, with (x_s, x_vv, x_vs) = φ(h_j) ⊙ (W e(r_ij) + b) f_c(r_ij) split in three:
    Δh_i = Σ_j x_s                       Δv_i = Σ_j v_j ⊙ x_vv + x_vs ⊗ r̂_ij
update (eq. 9-10), per atom, with U, V linear maps over channels (no bias, so
vectors stay vectors) and (a_vv, a_sv, a_ss) = MLP([h_i, ‖V v_i‖]):
    Δv_i = a_vv ⊙ U v_i                  Δh_i = a_ss + a_sv ⊙ ⟨U v_i, V v_i⟩

Both return the increments; the model adds them.

‖V v_i‖ is where PaiNN's smoothness is decided. Vector features vanish by
symmetry wherever an atom sits on a centre of inversion (a perfect fcc or bcc
site, the middle atom of a collinear triple) and grow linearly with the
displacement δ from it, so the energy holds ‖c δ‖ = |c| |δ|: a cusp, whose
force jumps sign across the site and whose force constant (the phonons) is
undefined. ``vector_norm="paper"`` is the paper's norm with the ε that
implementations add for a finite gradient, sqrt(Σ + 1e-8): it rounds the
cusp over |V v| ≲ 1e-4 only, so force/δ still varies by 10× between
δ = 1e-4 and 1e-2 Å. ``vector_norm="smooth"`` (the default) uses
sqrt(Σ + 1) − 1, a smooth function of Σ = ‖V v‖²: quadratic (Σ/2) near zero,
so the energy is analytic in the displacements, and ‖V v‖ − 1 + O(1/‖V v‖)
for large vectors, so the features keep the norm's linear scale (the squared
norm Σ alone would be smooth too but grows quadratically). It is invariant
for the same reason as the norm (a function of ⟨V v, V v⟩).
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import MLP

_NORM_EPSILON = 1e-8  # the "paper" form's ε (SchNetPack's value)
VECTOR_NORMS = ("smooth", "paper")


class PaiNNMessage(ScalarVectorMessagePassing):
    """Message block: (h [N, F], v [N, F, 3]) and edge features -> (Δh [N, F], Δv [N, F, 3]).

    Args:
        channels: F.
        num_radial: width of the radial basis the filters are made from.
        activation: of φ's hidden layer.
        avg_num_neighbors: neighbour sums are divided by this (1: PaiNN's plain sum).
    """

    def __init__(self, channels: int, num_radial: int, activation: str = "silu", avg_num_neighbors: float = 1.0):
        super().__init__(avg_num_neighbors)
        self.channels, self.num_radial = channels, num_radial
        self.phi = MLP([channels, channels, 3 * channels], activation)
        self.filter = nn.Linear(num_radial, 3 * channels)

    def reset_parameters(self) -> None:
        self.phi.reset_parameters()
        self.filter.reset_parameters()

    def forward(self, h: Tensor, v: Tensor, edge_index: Tensor, edge_radial: Tensor, edge_cutoff: Tensor,
                edge_unit: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            h: [N, F]; v: [N, F, 3].
            edge_index: [2, E] (sender j, receiver i).
            edge_radial: [E, num_radial] radial basis.
            edge_cutoff: [E] cutoff function; it multiplies the filters (bias included), so messages
                vanish at the cutoff.
            edge_unit: [E, 3] unit vectors of ``edge_vec``.
        """
        if h.shape[-1] != self.channels or v.shape[1:] != (self.channels, 3) or edge_radial.shape[-1] != self.num_radial:
            raise ValueError(f"expected h [N, {self.channels}], v [N, {self.channels}, 3] and edge_radial "
                             f"[E, {self.num_radial}], got {list(h.shape)}, {list(v.shape)}, {list(edge_radial.shape)}")
        weights = self.filter(edge_radial) * edge_cutoff.unsqueeze(-1)  # [E, 3F]
        sender, receiver = edge_index[0], edge_index[1]
        messages = self.message(self.phi(h).index_select(0, sender), v.index_select(0, sender), weights, edge_unit)
        return self.update(self.aggregate(messages, receiver, dim_size=h.shape[0]))

    def message(self, phi_j: Tensor, v_j: Tensor, weights: Tensor, unit: Tensor) -> List[Tensor]:
        x_s, x_vv, x_vs = torch.split(phi_j * weights, self.channels, dim=-1)  # each [E, F]
        return [x_s, v_j * x_vv.unsqueeze(-1) + x_vs.unsqueeze(-1) * unit.unsqueeze(1)]

    def update(self, inputs: List[Tensor]) -> tuple[Tensor, Tensor]:
        return inputs[0], inputs[1]  # (Δh, Δv), summed over senders

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_radial={self.num_radial}, avg_num_neighbors={float(self.avg_num_neighbors)}"


class PaiNNUpdate(nn.Module):
    """Update block: (h [N, F], v [N, F, 3]) -> (Δh, Δv), mixing scalars and vector norms and products per atom."""

    def __init__(self, channels: int, activation: str = "silu", vector_norm: str = "smooth"):
        super().__init__()
        if vector_norm not in VECTOR_NORMS:
            raise ValueError(f"vector_norm must be one of {VECTOR_NORMS}, got {vector_norm!r}")
        self.channels = channels
        self.smooth = vector_norm == "smooth"
        self.U = nn.Linear(channels, channels, bias=False)
        self.V = nn.Linear(channels, channels, bias=False)
        self.mlp = MLP([2 * channels, channels, 3 * channels], activation)
        self.norm_epsilon = _NORM_EPSILON  # an attribute: TorchScript does not see module-level floats

    def reset_parameters(self) -> None:
        for module in (self.U, self.V, self.mlp):
            module.reset_parameters()

    def forward(self, h: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        uv = self.U(v.transpose(1, 2)).transpose(1, 2)  # [N, F, 3]: channels mixed, components kept
        vv = self.V(v.transpose(1, 2)).transpose(1, 2)
        square = vv.pow(2).sum(-1)  # [N, F]
        norm = torch.sqrt(square + 1.0) - 1.0 if self.smooth else torch.sqrt(square + self.norm_epsilon)
        a_vv, a_sv, a_ss = torch.split(self.mlp(torch.cat([h, norm], dim=-1)), self.channels, dim=-1)
        return a_ss + a_sv * (uv * vv).sum(-1), a_vv.unsqueeze(-1) * uv
