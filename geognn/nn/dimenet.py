"""DimeNet and DimeNet++ blocks: directed edge messages updated through bond angles.

DimeNet (Gasteiger, Groß & Günnemann, ICLR 2020) and DimeNet++ (Gasteiger et
al., 2020) keep one message per directed edge j -> i. An interaction block
updates m_ji from the messages m_kj of the edges arriving at j, through the
distance d_kj and the angle α_kji between the two edges (paper eq. 3):

    m_ji' = f_update(m_ji, Σ_{k ∈ N(j) \\ {i}} f_int(m_kj, e_RBF(d_ji), a_SBF(d_kj, α_kji)))

In MPNN terms this is message passing on the line graph: the line graph's
nodes are the edges of the radius graph, and edge kj sends to edge ji
(`geognn.graph.triplets` lists those pairs). `DimeNetInteraction` and
`DimeNetPPInteraction` are `MessagePassing` modules over that line graph with
``message`` / ``aggregate`` / ``update`` as in PyG.

Every block takes edge geometry (lengths, angle cosines from edge vectors), so
periodic images work as they do for molecules. Bases:

    e_RBF,n(d)   = sqrt(2/c) sin(f_n d/c) / d · u(d/c)                   (eq. 7, f_n = nπ, trainable)
    a_SBF,ln(d, α) = sqrt(2/c³) / |j_{l+1}(z_ln)| · j_l(z_ln d/c) · u(d/c) / (d/c) · Y_l^0(α)

with u the polynomial envelope of exponent p = ``envelope_exponent`` + 1
(eq. 8). The extra 1/(d/c) in a_SBF is not in the paper's equation but is in
the reference implementation (and PyG's), whose trained weights assume it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.inits import glorot_orthogonal

from geognn.nn.mlp import ACTIVATIONS, lookup
from geognn.nn.radial import BesselBasis, PolynomialEnvelope
from geognn.nn.triplet_ops import TripletPattern, spmm, triplet_pattern
from geognn.nn.spherical import spherical_bessel, spherical_bessel_roots, zonal_harmonics

OUTPUT_INITS = ("zeros", "glorot_orthogonal")


def _activation(name: str) -> nn.Module:
    return lookup(ACTIVATIONS, name, "activation")()


def _glorot(linear: nn.Linear) -> None:
    # The reference initialisation of every DimeNet dense layer.
    glorot_orthogonal(linear.weight, scale=2.0)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


# --------------------------------------------------------------------------- bases


class DimeNetRadialBasis(nn.Module):
    """e_RBF(d) [E, num_radial]: Bessel functions with trainable frequencies times the envelope u(d/c)."""

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.bessel = BesselBasis(num_radial, cutoff, trainable=True)
        self.envelope = PolynomialEnvelope(cutoff, exponent=envelope_exponent + 1)

    def reset_parameters(self) -> None:
        self.bessel.reset_parameters()

    def forward(self, edge_len: Tensor) -> Tensor:
        return self.bessel(edge_len) * self.envelope(edge_len).unsqueeze(-1)


class SphericalBasis(nn.Module):
    """a_SBF(d_kj, α_kji) [T, num_spherical * num_radial], index l * num_radial + n.

    ``roots`` (z_ln) and ``normalizer`` are float64 buffers in every model
    dtype, so a model can carry the exact constants of another implementation
    (`geognn.models.DimeNet.from_pyg` loads PyG's float32-rounded roots). The
    radial part is evaluated per edge in float64 whatever the model dtype: the
    spherical Bessel recurrence cancels at short distances for high l, and per
    edge it costs little.
    """

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        if num_spherical < 1 or num_radial < 1:
            raise ValueError(f"num_spherical and num_radial must be positive, got {num_spherical}, {num_radial}")
        self.num_spherical = num_spherical
        self.num_radial = num_radial
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))
        self.envelope = PolynomialEnvelope(cutoff, exponent=envelope_exponent + 1)
        self.register_buffer("roots", torch.empty(num_spherical, num_radial, dtype=torch.float64))
        self.register_buffer("normalizer", torch.empty(num_spherical, num_radial, dtype=torch.float64))
        self.reset_parameters()

    def _apply(self, fn, recurse=True):
        # The constants stay float64 whatever the model dtype (model.float() must not
        # round them, or a later .double() would keep the rounding); only devices change.
        constants = {name: getattr(self, name) for name in ("roots", "normalizer")}
        super()._apply(fn, recurse)
        for name, value in constants.items():
            setattr(self, name, value.to(device=getattr(self, name).device))
        return self

    def reset_parameters(self) -> None:
        self.set_roots(spherical_bessel_roots(self.num_spherical, self.num_radial))

    @torch.no_grad()
    def set_roots(self, roots: Tensor, normalizer: Tensor | None = None) -> None:
        """Use ``roots`` [num_spherical, num_radial] as z_ln.

        ``normalizer`` defaults to sqrt(2/c³) / |j_{l+1}(z_ln)|; give it to carry
        another implementation's rounding of those constants.
        """
        roots = torch.as_tensor(roots, dtype=torch.float64)
        if roots.shape != self.roots.shape:
            raise ValueError(f"roots must be {list(self.roots.shape)}, got {list(roots.shape)}")
        if normalizer is None:
            next_order = spherical_bessel(self.num_spherical + 1, roots)  # [L, K, L + 1]
            l = torch.arange(self.num_spherical)
            j_next = next_order[l, :, l + 1]  # j_{l+1}(z_ln), [L, K]
            normalizer = math.sqrt(2.0 / float(self.cutoff) ** 3) / j_next.abs()
        self.roots.copy_(roots)
        self.normalizer.copy_(torch.as_tensor(normalizer, dtype=torch.float64))

    def radial(self, edge_len: Tensor) -> Tensor:
        """Per-edge radial part [E, num_spherical, num_radial], in the dtype of ``edge_len``."""
        x = (edge_len.double() / self.cutoff.double()).view(-1, 1, 1)
        values = _bessel_rows(self.roots * x)  # j_l(z_ln x), [E, L, K]
        scale = self.envelope(edge_len.double()).view(-1, 1, 1) / x
        return (values * self.normalizer * scale).to(edge_len.dtype)

    def forward(self, edge_len: Tensor, cos_angle: Tensor, idx_kj: Tensor) -> Tensor:
        """
        Args:
            edge_len: [E] edge lengths.
            cos_angle: [T] cosine of each triplet's angle.
            idx_kj: [T] the edge k -> j of each triplet (whose length enters).
        """
        radial = self.radial(edge_len).index_select(0, idx_kj)  # [T, L, K]
        angular = zonal_harmonics(self.num_spherical, cos_angle)  # [T, L]
        return (radial * angular.unsqueeze(-1)).flatten(1)

    def extra_repr(self) -> str:
        return f"num_spherical={self.num_spherical}, num_radial={self.num_radial}, cutoff={float(self.cutoff)}"


def _bessel_rows(arg: Tensor) -> Tensor:
    """j_l(arg[..., l, :]) for each row l of ``arg`` [..., L, K].

    The upward recurrence of `spherical_bessel`, advanced only on the rows
    that still need a higher order (about L²K/2 evaluations per edge).
    """
    num_orders = arg.shape[-2]
    sin, cos = torch.sin(arg), torch.cos(arg)
    previous = sin / arg  # j_0, rows >= 0
    rows = [previous[..., :1, :]]
    if num_orders > 1:
        arg, previous = arg[..., 1:, :], previous[..., 1:, :]
        current = sin[..., 1:, :] / arg**2 - cos[..., 1:, :] / arg  # j_1, rows >= 1
        rows.append(current[..., :1, :])
        for l in range(1, num_orders - 1):  # j_{l+1} on rows >= l + 1
            arg, previous, current = arg[..., 1:, :], previous[..., 1:, :], current[..., 1:, :]
            previous, current = current, (2 * l + 1) / arg * current - previous
            rows.append(current[..., :1, :])
    return torch.cat(rows, dim=-2)


def triplet_cos_angle(edge_vec: Tensor, edge_len: Tensor, idx_kj: Tensor, idx_ji: Tensor, vertex: str = "j") -> Tensor:
    """Cosine of each triplet's angle from edge vectors ``pos[sender] - pos[receiver] (+ shift)``.

    ``vertex="j"``: α_kji, between x_k - x_j and x_i - x_j (the paper's angle).
    ``vertex="i"``: α_jik, between x_j - x_i and x_k - x_i (the reference
    DimeNet code and PyG's `DimeNet`; see gasteigerjo/dimenet issue #9).
    """
    vec_kj, vec_ji = edge_vec.index_select(0, idx_kj), edge_vec.index_select(0, idx_ji)  # x_k - x_j, x_j - x_i
    len_ji = edge_len.index_select(0, idx_ji)
    if vertex == "j":
        return -(vec_kj * vec_ji).sum(-1) / (edge_len.index_select(0, idx_kj) * len_ji)
    if vertex == "i":
        vec_ki = vec_ji + vec_kj  # x_k - x_i
        return (vec_ji * vec_ki).sum(-1) / (len_ji * torch.linalg.vector_norm(vec_ki, dim=-1))
    # '{vertex}', not {vertex!r}: TorchScript's f-strings take no conversions
    raise ValueError(f"unknown angle vertex '{vertex}'; choose 'j' (α_kji) or 'i' (α_jik)")


# --------------------------------------------------------------------------- blocks


class DimeNetEmbedding(nn.Module):
    """Initial edge messages m_ji = σ(W [h_i ‖ h_j ‖ σ(W_rbf e_RBF(d_ji))] + b), [E, F]."""

    def __init__(self, num_radial: int, hidden_channels: int, max_atomic_number: int = 94, activation: str = "silu"):
        super().__init__()
        self.act = _activation(activation)
        self.emb = nn.Embedding(max_atomic_number + 1, hidden_channels)
        self.lin_rbf = nn.Linear(num_radial, hidden_channels)
        self.lin = nn.Linear(3 * hidden_channels, hidden_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.emb.weight, -math.sqrt(3), math.sqrt(3))
        self.lin_rbf.reset_parameters()
        self.lin.reset_parameters()

    def forward(self, z: Tensor, rbf: Tensor, edge_index: Tensor) -> Tensor:
        """z [N], rbf [E, num_radial], edge_index [2, E] (sender j, receiver i) -> [E, F]."""
        h = self.emb(z)
        sender, receiver = edge_index[0], edge_index[1]  # indexing, not unpacking: TorchScript cannot unpack a tensor
        rbf = self.act(self.lin_rbf(rbf))
        return self.act(self.lin(torch.cat([h[receiver], h[sender], rbf], dim=-1)))


class ResidualLayer(nn.Module):
    """x + σ(W₂ σ(W₁ x + b₁) + b₂)."""

    def __init__(self, channels: int, activation: str = "silu"):
        super().__init__()
        self.act = _activation(activation)
        self.lin1 = nn.Linear(channels, channels)
        self.lin2 = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.lin1)
        _glorot(self.lin2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.lin2(self.act(self.lin1(x))))


class _LineGraphInteraction(MessagePassing):
    """Shared step of both interaction blocks: triplet sum, skip connection and residual stacks (paper Fig. 4).

    Subclasses turn m_kj and the bases into line-graph node features and a
    per-triplet basis in ``inputs``, and define ``message`` (per triplet),
    ``fused_message_and_aggregate`` (the same summed without per-triplet
    messages) and ``combine`` (aggregated messages -> [E, F]); aggregation is
    the sum over the edges k -> j of each edge j -> i. ``fused=False`` takes
    the plain message / aggregate path.
    """

    def __init__(self, hidden_channels: int, num_before_skip: int, num_after_skip: int, activation: str, fused: bool):
        super().__init__(aggr="add", node_dim=0, flow="source_to_target")
        self.fused = fused
        self.hidden_channels = hidden_channels
        self.activation = activation
        self.act = _activation(activation)
        self.lin_ji = nn.Linear(hidden_channels, hidden_channels)
        self.lin_kj = nn.Linear(hidden_channels, hidden_channels)
        self.layers_before_skip = nn.ModuleList(ResidualLayer(hidden_channels, activation) for _ in range(num_before_skip))
        self.lin = nn.Linear(hidden_channels, hidden_channels)
        self.layers_after_skip = nn.ModuleList(ResidualLayer(hidden_channels, activation) for _ in range(num_after_skip))

    __repr__ = torch.nn.Module.__repr__
    # PyG's aggregation module is unused (`pass_messages` sums with index_add) and would carry
    # torch-scatter's operators into an exported model.
    __jit_ignored_attributes__ = ["aggr_module"]

    def reset_parameters(self) -> None:
        for linear in (self.lin_ji, self.lin_kj, self.lin):
            _glorot(linear)
        for layer in (*self.layers_before_skip, *self.layers_after_skip):
            layer.reset_parameters()

    def forward(
        self,
        m: Tensor,
        rbf: Tensor,
        sbf: Tensor,
        idx_kj: Tensor,
        idx_ji: Tensor,
        pattern: Optional[TripletPattern] = None,
    ) -> Tensor:
        """
        Args:
            m: [E, F] edge messages.
            rbf: [E, num_radial] radial basis of each edge.
            sbf: [T, num_spherical * num_radial] spherical basis of each triplet.
            idx_kj: [T] the incoming edge k → j of each triplet (`geognn.graph.triplets`).
            idx_ji: [T] its outgoing edge j → i; triplets sorted by it.
            pattern: `triplet_pattern(idx_ji, idx_kj, E, E)`, shared by
                the blocks of a model; built here when not given.

        Returns:
            [E, F] updated messages.
        """
        x_kj, basis = self.inputs(m, rbf, sbf)
        if not self.fused:
            return self.pass_messages(x_kj, basis, m, idx_kj, idx_ji)
        if pattern is None:
            pattern = triplet_pattern(idx_ji, idx_kj, m.shape[0], m.shape[0])
        return self.update(self.fused_message_and_aggregate(pattern, x_kj, basis), m)

    def pass_messages(self, x: Tensor, sbf: Tensor, m: Tensor, idx_kj: Tensor, idx_ji: Tensor) -> Tensor:
        """message per triplet (from edge kj's row of ``x``), summed onto edge ji, then update.

        The three steps written out rather than PyG's ``propagate``, whose scripted form would
        reference torch-scatter (see `geognn.nn.message_passing`).
        """
        messages = self.message(x.index_select(0, idx_kj), sbf)
        shape = list(messages.shape)
        shape[0] = m.shape[0]
        return self.update(messages.new_zeros(shape).index_add_(0, idx_ji, messages), m)

    def update(self, aggregated: Tensor, m: Tensor) -> Tensor:
        h = self.act(self.lin_ji(m)) + self.combine(aggregated)
        for layer in self.layers_before_skip:
            h = layer(h)
        h = self.act(self.lin(h)) + m
        for layer in self.layers_after_skip:
            h = layer(h)
        return h

    def inputs(self, m: Tensor, rbf: Tensor, sbf: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def fused_message_and_aggregate(self, pattern: TripletPattern, x: Tensor, sbf: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, aggregated: Tensor) -> Tensor:
        raise NotImplementedError


class DimeNetInteraction(_LineGraphInteraction):
    """DimeNet interaction: a bilinear layer mixes m_kj with the spherical basis (paper eq. 4-5).

    Messages per triplet are the outer products a_SBF ⊗ (m_kj ⊙ W_rbf e_RBF(d_kj)),
    [T, num_bilinear, F]; the bilinear weight W [F, num_bilinear, F] is
    applied after the sum over k, which is the same linear map on fewer rows.
    ``fused`` (the default) forms that sum without the [T, num_bilinear, F]
    messages: slice b of it is a rank-1 sparse product of column b of the
    embedded basis with the m_kj features (`geognn.nn.triplet_ops.spmm`), whose
    derivatives of every order need no per-triplet features either.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_bilinear: int,
        num_spherical: int,
        num_radial: int,
        num_before_skip: int = 1,
        num_after_skip: int = 2,
        activation: str = "silu",
        fused: bool = True,
    ):
        super().__init__(hidden_channels, num_before_skip, num_after_skip, activation, fused)
        self.num_bilinear = num_bilinear
        self.lin_rbf = nn.Linear(num_radial, hidden_channels, bias=False)
        self.lin_sbf = nn.Linear(num_spherical * num_radial, num_bilinear, bias=False)
        self.W = nn.Parameter(torch.empty(hidden_channels, num_bilinear, hidden_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _glorot(self.lin_rbf)
        _glorot(self.lin_sbf)
        nn.init.normal_(self.W, mean=0.0, std=2.0 / self.W.shape[0])

    def inputs(self, m: Tensor, rbf: Tensor, sbf: Tensor) -> tuple[Tensor, Tensor]:
        """σ(W_kj m + b) ⊙ W_rbf e_RBF [E, F] and W_sbf a_SBF [T, num_bilinear]."""
        return self.act(self.lin_kj(m)) * self.lin_rbf(rbf), self.lin_sbf(sbf)

    def message(self, x_j: Tensor, sbf: Tensor) -> Tensor:
        return sbf.unsqueeze(-1) * x_j.unsqueeze(1)  # [T, num_bilinear, F]

    def fused_message_and_aggregate(self, pattern: TripletPattern, x: Tensor, sbf: Tensor) -> Tensor:
        """``message`` summed over each edge's triplets, [E, num_bilinear, F], one rank-1 product per b."""
        ones = torch.ones(x.shape[1], 1, dtype=x.dtype, device=x.device)
        return torch.stack([spmm(sbf[:, b : b + 1], x, ones, pattern) for b in range(self.num_bilinear)], dim=1)

    def combine(self, aggregated: Tensor) -> Tensor:
        return aggregated.flatten(1) @ self.W.flatten(1).T  # W[out, b, in]

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, num_bilinear={self.num_bilinear}, "
            f"activation={self.activation!r}, fused={self.fused}"
        )


class DimeNetPPInteraction(_LineGraphInteraction):
    """DimeNet++ interaction: m_kj down-projected to ``int_emb_size`` and multiplied by the embedded basis.

    Per triplet: σ(W_down (σ(W_kj m_kj + b) ⊙ W_rbf e_RBF(d_kj)))[kj] ⊙ W_sbf a_SBF;
    after the sum over k, σ(W_up ·) is added to σ(W_ji m_ji + b) (DimeNet++ Fig. 1).
    """

    def __init__(
        self,
        hidden_channels: int,
        int_emb_size: int,
        basis_emb_size: int,
        num_spherical: int,
        num_radial: int,
        num_before_skip: int = 1,
        num_after_skip: int = 2,
        activation: str = "silu",
        fused: bool = True,
    ):
        super().__init__(hidden_channels, num_before_skip, num_after_skip, activation, fused)
        self.int_emb_size = int_emb_size
        self.basis_emb_size = basis_emb_size
        self.lin_rbf1 = nn.Linear(num_radial, basis_emb_size, bias=False)
        self.lin_rbf2 = nn.Linear(basis_emb_size, hidden_channels, bias=False)
        self.lin_sbf1 = nn.Linear(num_spherical * num_radial, basis_emb_size, bias=False)
        self.lin_sbf2 = nn.Linear(basis_emb_size, int_emb_size, bias=False)
        self.lin_down = nn.Linear(hidden_channels, int_emb_size, bias=False)
        self.lin_up = nn.Linear(int_emb_size, hidden_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for linear in (self.lin_rbf1, self.lin_rbf2, self.lin_sbf1, self.lin_sbf2, self.lin_down, self.lin_up):
            _glorot(linear)

    def inputs(self, m: Tensor, rbf: Tensor, sbf: Tensor) -> tuple[Tensor, Tensor]:
        """σ(W_down (σ(W_kj m + b) ⊙ W_rbf e_RBF)) [E, int_emb_size] and W_sbf1 a_SBF [T, basis_emb_size]."""
        x_kj = self.act(self.lin_kj(m)) * self.lin_rbf2(self.lin_rbf1(rbf))
        return self.act(self.lin_down(x_kj)), self.lin_sbf1(sbf)

    def message(self, x_j: Tensor, sbf: Tensor) -> Tensor:
        return x_j * self.lin_sbf2(sbf)  # [T, int_emb_size]

    def fused_message_and_aggregate(self, pattern: TripletPattern, x: Tensor, sbf: Tensor) -> Tensor:
        """``message`` summed over each edge's triplets, without [T, int_emb_size] tensors.

        (Not PyG's ``message_and_aggregate``: PyG's generated ``propagate`` calls a method of
        that name with a sparse adjacency, and TorchScript would refuse the pattern argument.)

        The message x_kj ⊙ W_sbf2 s_t is linear in s_t (width basis_emb_size), so
        the sum is a sparse product of rank basis_emb_size (`geognn.nn.triplet_ops`).
        """
        return spmm(sbf, x, self.lin_sbf2.weight, pattern)

    def combine(self, aggregated: Tensor) -> Tensor:
        return self.act(self.lin_up(aggregated))

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, int_emb_size={self.int_emb_size}, "
            f"basis_emb_size={self.basis_emb_size}, activation={self.activation!r}, fused={self.fused}"
        )


class DimeNetOutput(nn.Module):
    """Per-atom output t_i = W σ(… σ(W₁ Σ_j (W_rbf e_RBF(d_ji)) ⊙ m_ji + b₁) …) (paper Fig. 4).

    With ``out_emb_channels`` (DimeNet++) the sum over incoming edges is first
    up-projected to that width; without it (DimeNet) the dense layers keep F.
    ``output_init="zeros"`` starts the final layer at zero, as the reference does.
    """

    def __init__(
        self,
        num_radial: int,
        hidden_channels: int,
        out_channels: int = 1,
        num_layers: int = 3,
        out_emb_channels: int | None = None,
        activation: str = "silu",
        output_init: str = "zeros",
    ):
        super().__init__()
        lookup({name: name for name in OUTPUT_INITS}, output_init, "output_init")
        self.output_init = output_init
        self.act = _activation(activation)
        width = out_emb_channels or hidden_channels
        self.lin_rbf = nn.Linear(num_radial, hidden_channels, bias=False)
        self.lin_up = nn.Linear(hidden_channels, width, bias=False) if out_emb_channels else None
        self.lins = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))
        self.lin = nn.Linear(width, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.lin_rbf)
        if self.lin_up is not None:
            _glorot(self.lin_up)
        for linear in self.lins:
            _glorot(linear)
        if self.output_init == "zeros":
            nn.init.zeros_(self.lin.weight)
        else:
            _glorot(self.lin)

    def forward(self, m: Tensor, rbf: Tensor, receiver: Tensor, num_nodes: int) -> Tensor:
        """m [E, F], rbf [E, num_radial], receiver [E] -> [N, out_channels]."""
        x = torch.zeros(num_nodes, m.shape[1], dtype=m.dtype, device=m.device)
        x = x.index_add(0, receiver, self.lin_rbf(rbf) * m)
        if self.lin_up is not None:
            x = self.lin_up(x)
        for linear in self.lins:
            x = self.act(linear(x))
        return self.lin(x)


__all__ = [
    "DimeNetRadialBasis",
    "SphericalBasis",
    "triplet_cos_angle",
    "DimeNetEmbedding",
    "ResidualLayer",
    "DimeNetInteraction",
    "DimeNetPPInteraction",
    "DimeNetOutput",
    "OUTPUT_INITS",
]
