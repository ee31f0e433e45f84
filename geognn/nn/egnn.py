"""E(n)-equivariant graph layer (Satorras, Hoogeboom & Welling, ICML 2021, eqs. 3-6).

For an edge j -> i with x_ij = x_i - x_j (periodic image included):

    m_ij  = φ_e(h_i, h_j, |x_ij|², a_ij)                 (edge attributes a_ij optional)
    x_i' = x_i + Σ_j w_ij x_ij / (|x_ij| + c) φ_x(m_ij) / n̄   (c = 1: normalised update)
    h_i' = h_i + φ_h(h_i, Σ_j w_ij m_ij / n̄, |v_i|²)

with w_ij an optional cutoff envelope and n̄ ``avg_num_neighbors``. The
optional vector channel (F_v vectors per atom) is updated equivariantly:

    v_i' = W_mix [ v_i ⊙ φ_g(h_i) + Σ_j w_ij x_ij / (|x_ij| + c) ⊗ φ_v(m_ij) / n̄ ]

where W_mix mixes vector channels linearly (no bias, so it commutes with
rotations). Only distances and differences of positions enter, so the layer
is invariant (h) and equivariant (x, v) under rotations, reflections,
translations and permutations of the atoms.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import MLP, ACTIVATIONS, lookup, second_moment_gain


class EGNNLayer(ScalarVectorMessagePassing):
    """One EGNN message-passing step on scalars ``h``, positions ``pos`` and optional vectors ``v``.

    Args:
        hidden_channels: F, size of ``h`` and of the messages.
        edge_channels: size of the optional invariant edge attributes (0 for none).
        vector_channels: F_v, number of vector channels (0 for none).
        update_coords: whether to update positions (eq. 4); if False ``pos`` is returned unchanged.
        normalize: divide x_ij by (|x_ij| + ``norm_constant``) in the position
            and vector updates; keeps deep stacks stable.
        norm_constant: the constant c above.
        attention: gate each message by ``sigmoid(φ_inf(m_ij))`` (the paper's edge inference).
        residual: add the update to ``h`` rather than replace it.
        activation: name in `geognn.nn.mlp.ACTIVATIONS`.
        avg_num_neighbors: messages are summed and divided by this.
    """

    def __init__(
        self,
        hidden_channels: int,
        edge_channels: int = 0,
        vector_channels: int = 0,
        update_coords: bool = True,
        normalize: bool = True,
        norm_constant: float = 1.0,
        attention: bool = False,
        residual: bool = True,
        activation: str = "silu",
        avg_num_neighbors: float = 1.0,
    ):
        super().__init__(avg_num_neighbors=avg_num_neighbors)
        lookup(ACTIVATIONS, activation, "activation")
        self.hidden_channels = hidden_channels
        self.edge_channels = edge_channels
        self.vector_channels = vector_channels
        self.update_coords = update_coords
        self.normalize = normalize
        self.attention = attention
        self.residual = residual
        self.activation = activation
        self.register_buffer("norm_constant", torch.tensor(float(norm_constant) if normalize else 0.0))

        F, Fv = hidden_channels, vector_channels
        self.edge_mlp = MLP([2 * F + 1 + edge_channels, F, F], activation, activate_last=True)
        self.attention_gate = nn.Linear(F, 1) if attention else None
        self.node_mlp = MLP([2 * F + Fv, F, F], activation)
        self.coord_mlp = MLP([F, F, 1], activation) if update_coords else None
        if Fv:
            self.vector_edge = MLP([F, F, Fv], activation)
            self.vector_gate = nn.Linear(F, Fv)
            self.vector_mix = nn.Linear(Fv, Fv, bias=False)
        else:
            self.vector_edge = self.vector_gate = self.vector_mix = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in (self.edge_mlp, self.node_mlp, self.coord_mlp, self.vector_edge):
            if module is not None:
                module.reset_parameters()
        for module in (self.attention_gate, self.vector_gate, self.vector_mix):
            if module is not None:
                module.reset_parameters()
        # φ_e starts variance-preserving: weights N(0, g²/fan_in) with g = E[act(x)²]^(-1/2) for
        # x ~ N(0, 1) (1.68 for SiLU, e3nn's "normalize2mom" constant), zero biases. With torch's
        # default (uniform, variance 1/(3 fan_in)) the messages start so small that the energy
        # hardly depends on the geometry and training first sits at the composition-only error
        # for several epochs (train/RESULTS.md: QM9 tiny recipe, no plateau and 209 vs 274 meV).
        gain = second_moment_gain(self.activation)
        for linear in self.edge_mlp:
            if isinstance(linear, nn.Linear):
                nn.init.normal_(linear.weight, std=gain / linear.in_features ** 0.5)
                nn.init.zeros_(linear.bias)
        if self.coord_mlp is not None:
            # Start close to the identity on positions (the reference code uses
            # a gain of 0.001 for this last layer), so early training does not
            # scramble the geometry.
            nn.init.xavier_uniform_(self.coord_mlp[-1].weight, gain=0.001)

    def forward(
        self,
        h: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        v: Optional[Tensor] = None,
        edge_attr: Optional[Tensor] = None,
        edge_weight: Optional[Tensor] = None,
        edge_offset: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """
        Args:
            h: [N, F] invariant node features.
            pos: [N, 3] positions.
            edge_index: [2, E] (sender j, receiver i).
            v: [N, F_v, 3] vector features, required when ``vector_channels > 0``
                (zeros are a valid start).
            edge_attr: [E, edge_channels] invariant edge attributes.
            edge_weight: [E] envelope multiplying every message (e.g. a cutoff).
            edge_offset: [E, 3] lattice translation of the sender's image
                (``edge_shift @ cell``); None for molecules.

        Returns:
            (h [N, F], pos [N, 3], v [N, F_v, 3] or None).
        """
        if not torch.jit.is_scripting():
            self._check_shapes(h, pos, edge_index, v, edge_attr)
        sender, receiver = edge_index[0], edge_index[1]
        edge_vec = pos.index_select(0, sender) - pos.index_select(0, receiver)  # x_j - x_i, [E, 3]
        if edge_offset is not None:
            edge_vec = edge_vec + edge_offset
        # φ_e's first linear map of (h_i, h_j, |x_ij|², a_ij) is W_i h_i + W_j h_j + ...: apply
        # W_i and W_j once per atom and gather the results per edge (node-sized matmuls
        # instead of one edge-sized matmul on the concatenation); same function, same weights.
        first = self.edge_mlp[0]
        F = self.hidden_channels
        to_receiver = h @ first.weight[:, :F].t()  # [N, F]
        to_sender = torch.addmm(first.bias, h, first.weight[:, F : 2 * F].t())  # [N, F]
        messages = self.message(to_receiver.index_select(0, receiver), to_sender.index_select(0, sender),
                                edge_vec, edge_attr, edge_weight)
        return self.update(self.aggregate(messages, receiver, dim_size=h.shape[0]), h, pos, v)

    def message(
        self,
        h_i: Tensor,
        h_j: Tensor,
        edge_vec: Tensor,
        edge_attr: Optional[Tensor],
        edge_weight: Optional[Tensor],
    ) -> List[Tensor]:
        """Messages of eqs. 3-4; ``h_i``, ``h_j`` [E, F] are the receiver's and sender's rows of
        φ_e's first linear map (W_i h_i and W_j h_j + b).

        Returns [m_ij, then the coordinate message (x_i - x_j) φ_x(m_ij) when ``update_coords``,
        then the vector message when ``vector_channels``], each times the edge weight.
        """
        sq_len = edge_vec.pow(2).sum(-1, keepdim=True)  # [E, 1]
        first = self.edge_mlp[0]
        F = self.hidden_channels
        pre = torch.addcmul(h_i + h_j, sq_len, first.weight[:, 2 * F])  # + w_d |x_ij|²
        if edge_attr is not None:
            pre = pre + edge_attr @ first.weight[:, 2 * F + 1 :].t()
        message = pre
        for k, module in enumerate(self.edge_mlp):  # after the first linear: activation, linear, activation
            if k > 0:
                message = module(message)  # [E, F]
        if self.attention_gate is not None:
            message = message * torch.sigmoid(self.attention_gate(message))
        weight = sq_len.new_ones(sq_len.shape) if edge_weight is None else edge_weight.unsqueeze(-1)
        # x_i - x_j, divided by (|x_ij| + c) when normalised.
        direction = -edge_vec / (sq_len.sqrt() + self.norm_constant) if self.normalize else -edge_vec
        messages = [message * weight]
        if self.coord_mlp is not None:
            messages.append(direction * (weight * self.coord_mlp(message)))  # [E, 3]
        if self.vector_edge is not None:
            messages.append(direction.unsqueeze(1) * (weight * self.vector_edge(message)).unsqueeze(-1))  # [E, F_v, 3]
        return messages

    def update(
        self,
        inputs: List[Tensor],
        h: Tensor,
        pos: Tensor,
        v: Optional[Tensor],
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        features = [h, inputs[0]]
        if v is not None and self.vector_channels > 0:
            features.append(v.pow(2).sum(-1))  # |v_i|² per channel, invariant and smooth at 0
        h_update = self.node_mlp(torch.cat(features, dim=-1))
        h_out = h + h_update if self.residual else h_update
        pos_out = pos + inputs[1] if self.coord_mlp is not None else pos
        v_out: Optional[Tensor] = None
        if v is not None and self.vector_gate is not None and self.vector_mix is not None:
            gated = v * self.vector_gate(h).unsqueeze(-1) + inputs[-1]  # [N, F_v, 3]
            v_out = self.vector_mix(gated.transpose(-1, -2)).transpose(-1, -2)
        return h_out, pos_out, v_out

    @torch.jit.unused
    def _check_shapes(self, h, pos, edge_index, v, edge_attr) -> None:
        if h.dim() != 2 or h.shape[-1] != self.hidden_channels:
            raise ValueError(f"h must be [N, {self.hidden_channels}], got {list(h.shape)}")
        if pos.shape != (h.shape[0], 3):
            raise ValueError(f"pos must be [{h.shape[0]}, 3], got {list(pos.shape)}")
        if self.vector_channels and (v is None or v.shape != (h.shape[0], self.vector_channels, 3)):
            got = None if v is None else list(v.shape)
            raise ValueError(f"v must be [{h.shape[0]}, {self.vector_channels}, 3], got {got}")
        if self.edge_channels and (edge_attr is None or edge_attr.shape != (edge_index.shape[1], self.edge_channels)):
            got = None if edge_attr is None else list(edge_attr.shape)
            raise ValueError(f"edge_attr must be [{edge_index.shape[1]}, {self.edge_channels}], got {got}")

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, edge_channels={self.edge_channels}, "
            f"vector_channels={self.vector_channels}, update_coords={self.update_coords}, "
            f"normalize={self.normalize}, attention={self.attention}, residual={self.residual}, "
            f"activation={self.activation!r}, avg_num_neighbors={float(self.avg_num_neighbors)}"
        )
