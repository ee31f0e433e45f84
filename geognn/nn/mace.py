"""MACE's layers (Batatia et al., NeurIPS 2022): many-body features from one round of two-body messages.

One MACE layer t is (the paper's eqs. 8-13, in the notation of its reference
implementation mace-torch):

    A_i      = Linear( 1/n_avg Σ_{j ∈ N(i)} R(|r_ij|) · (Linear_up h_j ⊗ Y(r̂_ij)) )   interaction ("uvu")
    B_i      = Σ_{ν=1..correlation} Σ_p W^ν_{z_i, p, c} · U^ν_p ⋅ (A_i ⊗ ... ⊗ A_i)   symmetric contraction
    h_i'     = Linear(B_i) + SC(h_i, z_i)                                              product block
    E_i^(t)  = Readout_t(h_i')                                                          linear; last layer an MLP

`MACEInteraction` is the first line (NequIP's `TensorProductConv` without its
self-connection, plus the species skip connection ``SC`` returned beside it),
`SymmetricContraction` the second and `MACEProductBlock` the third.

The symmetric contraction works channel by channel: channel c of A_i is one
vector a of dimension D = Σ_l (2l + 1) (e.g. 16 for 0e + 1o + 2e + 3o). The
degree-ν features are the coupling paths U^ν_p ⋅ a^⊗ν, where U^ν_p chains
ν - 1 Wigner 3j symbols (e3nn's, times √(2L+1) for each intermediate L, the
"component" normalisation): l_1 ⊗ l_2 -> L_12, L_12 ⊗ l_3 -> L_123, ... -> the
output irrep. Because a ⊗ a ⊗ a is symmetric, U^ν_p ⋅ a^⊗ν only needs the
ν-th degree monomials a_i a_j a_k, i <= j <= k (816 of them for D = 16, not
4,096); each path's coefficients are summed over the orderings of each
monomial once, at construction. A forward pass evaluates the polynomial by
Horner's scheme: each monomial is its last (largest-index) factor a_k times a
monomial of degree ν - 1, so the output is Σ_k a_k Z_k with Z = F G_z, F the
channel's monomials of degree 0..correlation-1 (153 for D = 16 and
correlation 3) and G_z = Σ_p U_p W_{z,p} the coefficients weighted for element
z, formed once per element present, not once per atom.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import List, Optional

import torch
from e3nn import o3
from e3nn import nn as e3nn_nn
from torch import Tensor, nn

from geognn.nn.gate import activation_paths, apply_activation_paths
from geognn.nn.mlp import Float64Constants
from geognn.nn.tensor_product import TensorProductConv

__all__ = ["MACEInteraction", "MACEProductBlock", "MACEReadout", "SymmetricContraction", "coupling_paths",
           "symmetric_monomials"]


def _natural(ir: o3.Irrep) -> bool:
    return ir.p == (-1) ** ir.l


def coupling_paths(irreps_in, ir_out, degree: int, natural_only: bool = False,
                   with_triples: bool = False) -> list:
    """The coupling tensors U_p [ir_out.dim, D, ..., D] (``degree`` axes of D = ``irreps_in.dim``), float64.

    ``irreps_in`` lists one channel's irreps (multiplicity 1 each, e.g.
    ``"0e + 1o + 2e"``). Paths are made left to right: degree 1 is each input
    irrep alone; degree n couples every path of degree n - 1 (in the order of
    its irrep, stable) with every input irrep into every allowed irrep, from
    the lowest l up, through e3nn's ``wigner_3j(L, l_left, l_right)`` times
    √(2L+1). Only the paths ending in ``ir_out`` are returned, in that order,
    which is also mace-torch's (its ``U_matrix_real``). With ``natural_only``
    every irrep along a path has parity (-1)^l and l < 12 (mace-torch's rule
    for correlation 4). ``with_triples`` returns (U_p, the path's (L, l_left,
    l_right) triples) pairs instead.
    """
    irreps_in, ir_out = o3.Irreps(irreps_in), o3.Irrep(ir_out)
    if any(mul != 1 for mul, _ in irreps_in):
        raise ValueError(f"coupling_paths takes one channel's irreps (multiplicity 1 each), got {irreps_in}")
    dim = irreps_in.dim
    slices = irreps_in.slices()
    paths = []  # (irrep, tensor [ir.dim, D^n], triples)
    for (_, ir), part in zip(irreps_in, slices):
        tensor = torch.zeros(ir.dim, dim, dtype=torch.float64)
        tensor[:, part] = torch.eye(ir.dim, dtype=torch.float64)
        paths.append((ir, tensor, ()))
    l_max = max(ir.l for _, ir in irreps_in)
    for step in range(degree - 1):
        remaining = degree - 2 - step  # factors still to come after this one
        longer = []
        for ir_left, left, triples in sorted(paths, key=lambda path: path[0]):
            for (_, ir_right), part in zip(irreps_in, slices):
                for ir in ir_left * ir_right:
                    if natural_only and not (_natural(ir) and ir.l < 12):
                        continue
                    if abs(ir.l - ir_out.l) > remaining * l_max:  # cannot reach ir_out: dropping it keeps the order
                        continue
                    w3j = o3.wigner_3j(ir.l, ir_left.l, ir_right.l, dtype=torch.float64) * math.sqrt(ir.dim)
                    tensor = torch.zeros(ir.dim, left.shape[1], dim, dtype=torch.float64)
                    tensor[:, :, part] = torch.einsum("jk,ijl->ikl", left, w3j)
                    longer.append((ir, tensor.reshape(ir.dim, -1), triples + ((ir.l, ir_left.l, ir_right.l),)))
        paths = longer
    ordered = [(tensor.reshape(ir_out.dim, *[dim] * degree), triples)
               for ir, tensor, triples in sorted(paths, key=lambda path: path[0]) if ir == ir_out]
    return ordered if with_triples else [tensor for tensor, _ in ordered]


@functools.lru_cache(maxsize=None)
def symmetric_monomials(dim: int, degree: int) -> tuple[Tensor, Tensor, Tensor]:
    """The monomials a_i a_j ... (i <= j <= ...) of degree ``degree`` in ``dim`` variables.

    Returns (``prefix``, ``last``, ``of_tuple``): monomial n of this degree is
    monomial ``prefix[n]`` of the degree below times a[``last[n]``] (for degree
    1, ``prefix`` is all zero and the monomial is a[``last[n]``]), and
    ``of_tuple`` [dim^degree] is the monomial of every ordered index tuple
    (row-major), for summing a dense coefficient tensor over orderings.
    """
    combos = list(itertools.combinations_with_replacement(range(dim), degree))
    index = {combo: n for n, combo in enumerate(combos)}
    lower = ({combo: n for n, combo in enumerate(itertools.combinations_with_replacement(range(dim), degree - 1))}
             if degree > 1 else {(): 0})
    prefix = torch.tensor([lower[combo[:-1]] for combo in combos], dtype=torch.long)
    last = torch.tensor([combo[-1] for combo in combos], dtype=torch.long)
    of_tuple = torch.tensor([index[tuple(sorted(t))] for t in itertools.product(range(dim), repeat=degree)],
                            dtype=torch.long)
    return prefix, last, of_tuple


@functools.lru_cache(maxsize=32)
def _contraction_basis(irreps_in: str, ir_out: str, correlation: int) -> tuple[tuple[Tensor, tuple], ...]:
    """Per degree 1..correlation: (the paths' coefficients [ir_out.dim, monomials of that degree, paths],
    each path's (L, l_left, l_right) triples).

    Computed once per irreps signature (the generalised Clebsch-Gordan
    coefficients are the slow part) and shared by every layer that needs it.
    """
    dim = o3.Irreps(irreps_in).dim
    degrees = []
    for degree in range(1, correlation + 1):
        paths = coupling_paths(irreps_in, ir_out, degree, natural_only=correlation == 4 and degree == 4,
                               with_triples=True)
        _, last, of_tuple = symmetric_monomials(dim, degree)
        block = torch.zeros(o3.Irrep(ir_out).dim, len(last), len(paths), dtype=torch.float64)
        for p, (tensor, _) in enumerate(paths):
            block[:, :, p].index_add_(1, of_tuple, tensor.reshape(tensor.shape[0], -1))
        degrees.append((block, tuple(triples for _, triples in paths)))
    return tuple(degrees)


class SymmetricContraction(Float64Constants, nn.Module):
    """MACE's product basis: channel-wise polynomials of degree 1..``correlation``, weighted per element.

    Args:
        irreps_in: ``"c x l1 + c x l2 + ..."``: every irrep with the same
            multiplicity c (the channels), each irrep once (MACE's A features).
        irreps_out: ``"c x L1 + ..."``, each irrep once, multiplicity c.
        correlation: the highest degree ν (body order ν + 1), 1 to 4.
        num_elements: rows of the per-element weights.

    ``forward(x, species)``: x [N, irreps_in.dim] in e3nn's layout, species
    [N] element indices 0..num_elements-1 -> [N, irreps_out.dim] in e3nn's
    layout. Output channel c of irrep L is

        Σ_{ν <= correlation} Σ_p weights[L][ν-1][species, p, c] · U^ν_{L,p} ⋅ a_c^⊗ν

    with a_c channel c of x (its D components) and U^ν_{L,p} the coupling
    paths of `coupling_paths`. ``weights[k][ν - 1]`` is a [num_elements,
    paths, c] parameter for output irrep k at degree ν (mace-torch's layout);
    ``path_triples[k][ν - 1]`` lists each of its paths' (L, l_left, l_right)
    Wigner 3j symbols.

    Evaluation (Horner's scheme on sorted monomials): every monomial
    a_i1 ... a_iν (i1 <= ... <= iν) is its last factor a_iν times a monomial of
    degree ν - 1, so the output is Σ_k a_k Z_k with Z_k = Σ_f G[f, k] F_f, F
    the monomials of degree 0..correlation-1 of a channel (153 for D = 16 and
    correlation 3) and G the coefficients, weighted per element: one batched
    matrix product per element present and channel, on tensors of size
    [N, c, F], never [N, c, monomials of degree ν].
    """

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(channels) != 1:
            raise ValueError(f"every irrep of irreps_in ({self.irreps_in}) and irreps_out ({self.irreps_out}) must "
                             "have the same multiplicity (the channels)")
        for name, irreps in (("irreps_in", self.irreps_in), ("irreps_out", self.irreps_out)):
            if len({ir for _, ir in irreps}) != len(irreps):
                raise ValueError(f"{name} must list each irrep once, got {irreps}")
        if not 1 <= correlation <= 4:
            raise ValueError(f"correlation must be 1, 2, 3 or 4, got {correlation}")
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        self.channels = channels.pop()
        self.correlation = correlation
        self.num_elements = num_elements
        self._coupling = o3.Irreps([(1, ir) for _, ir in self.irreps_in])
        dim = self._dim = self._coupling.dim
        # Features: the monomials of degree 0 (the constant), 1, ..., correlation - 1.
        sizes = [1] + [len(symmetric_monomials(dim, t)[1]) for t in range(1, correlation)]
        feature_start = [sum(sizes[:t]) for t in range(correlation + 1)]
        # Degree t >= 2 from degree t - 1, one module per step (TorchScript reads buffers by literal names only).
        self.monomial_steps = nn.ModuleList([_MonomialStep(*symmetric_monomials(dim, t)[:2])
                                             for t in range(2, correlation)])
        # In: e3nn's [N, c*d_1 | c*d_2 | ...] -> [N, c, D] (channel-major).
        gather = torch.cat([(start + torch.arange(self.channels * ir.dim).reshape(self.channels, ir.dim))
                            for (_, ir), start in zip(self.irreps_in, [s.start for s in self.irreps_in.slices()])],
                           dim=1)
        self.register_buffer("gather_in", gather.flatten(), persistent=False)
        # G's non-zero rows: (feature f, output component m, last factor l) -> coefficient of each path q.
        self._out_dim = sum(ir.dim for _, ir in self.irreps_out)
        self._out_dims = [ir.dim for _, ir in self.irreps_out]  # plain ints: TorchScript cannot read Irreps
        rows, columns, values = [], [], []
        self.weights = nn.ModuleList()
        self.path_triples = []
        q0, m0 = 0, 0
        for _, ir in self.irreps_out:
            degrees = _contraction_basis(str(self._coupling), str(ir), correlation)
            self.weights.append(nn.ParameterList(
                [nn.Parameter(torch.empty(num_elements, block.shape[2], self.channels)) for block, _ in degrees]))
            self.path_triples.append([triples for _, triples in degrees])
            for t, (block, _) in enumerate(degrees, start=1):  # block [d, monomials of degree t, paths]
                prefix, last, _ = symmetric_monomials(dim, t)
                m, n, q = block.nonzero(as_tuple=True)
                feature = feature_start[t - 1] + prefix[n]
                rows.append(((feature * self._out_dim + m0 + m) * dim + last[n]))
                columns.append(q0 + q)
                values.append(block[m, n, q])
                q0 += block.shape[2]
            m0 += ir.dim
        rows, columns, values = torch.cat(rows), torch.cat(columns), torch.cat(values)
        used, row_index = torch.unique(rows, return_inverse=True)
        coefficients = torch.zeros(len(used), q0, dtype=torch.float64)
        coefficients.index_put_((row_index, columns), values, accumulate=True)
        self._num_features = feature_start[correlation]
        self.register_buffer("g_rows", used, persistent=False)
        self.register_constant("coefficients", coefficients)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # mace-torch's start: unit normal divided by the number of paths.
        for per_degree in self.weights:
            for weight in per_degree:
                with torch.no_grad():
                    weight.normal_().div_(max(weight.shape[1], 1))

    def features(self, a: Tensor) -> Tensor:
        """a [N, c, D] -> [N, c, F]: each channel's monomials of degree 0 (1), 1 (a_i), ..., correlation - 1."""
        parts = [a.new_ones(a.shape[0], a.shape[1], 1)]
        if self.correlation > 1:
            parts.append(a)
        below = a
        for step in self.monomial_steps:
            below = below.index_select(2, step.prefix) * a.index_select(2, step.last)
            parts.append(below)
        return torch.cat(parts, dim=2)

    def element_coefficients(self, element: int) -> Tensor:
        """G for one element: [c, F, out_dim * D], the paths weighted by this element's weights."""
        rows: List[Tensor] = []
        for per_degree in self.weights:  # loops, not a comprehension: TorchScript compiles these
            for w in per_degree:
                rows.append(w[element])
        weight = torch.cat(rows, dim=0)  # [paths, c]
        dense = self.coefficients.new_zeros(self._num_features * self._out_dim * self._dim, self.channels)
        dense = dense.index_copy(0, self.g_rows, self.coefficients @ weight)
        return dense.reshape(self._num_features, self._out_dim * self._dim, self.channels).permute(2, 0, 1).contiguous()

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # (the scripted layer leaves the check to the shapes below)
            if x.shape[-1] != self.irreps_in.dim:
                raise ValueError(f"x has {x.shape[-1]} components, expected {self.irreps_in.dim} ({self.irreps_in})")
        n = x.shape[0]
        # Nodes sorted by element, so that each element's rows are one block (split, not gathered: the
        # backward of a split is one concatenation, of a gather a zero-filled tensor per element).
        order = torch.argsort(species, stable=True)
        elements, counts = torch.unique_consecutive(species[order], return_counts=True)
        a = x.index_select(0, order).index_select(1, self.gather_in).reshape(n, self.channels, self._dim)  # [N, c, D]
        features = self.features(a).transpose(0, 1)  # [c, N, F]
        a_t = a.transpose(0, 1).unsqueeze(2)  # [c, N, 1, D]
        parts = []
        sizes = torch.jit.annotate(List[int], counts.tolist())  # (typed for TorchScript)
        present = torch.jit.annotate(List[int], elements.tolist())
        for element, f, a_e in zip(present, torch.split(features, sizes, dim=1), torch.split(a_t, sizes, dim=1)):
            # Z [c, N_e, out_dim, D] = F G_e, then out = Σ_k a_k Z_k
            z = torch.bmm(f, self.element_coefficients(element)).reshape(self.channels, -1, self._out_dim, self._dim)
            parts.append((z * a_e).sum(-1))
        out = torch.cat(parts, dim=1).transpose(0, 1)  # [N, c, out_dim], sorted by element
        out = out.index_select(0, torch.argsort(order))
        blocks, m0 = [], 0
        for dim in self._out_dims:  # [N, c, d] per irrep -> e3nn's [N, c*d]
            blocks.append(out[:, :, m0:m0 + dim].reshape(n, -1))
            m0 += dim
        return torch.cat(blocks, dim=1)

    def extra_repr(self) -> str:
        return (f"irreps_in={self.irreps_in}, irreps_out={self.irreps_out}, correlation={self.correlation}, "
                f"num_elements={self.num_elements}")


class _MonomialStep(nn.Module):
    """The monomials of one degree from those of the degree below (`symmetric_monomials`'
    ``prefix`` and ``last``), as buffers of one module for `SymmetricContraction.features`."""

    def __init__(self, prefix: Tensor, last: Tensor):
        super().__init__()
        self.register_buffer("prefix", prefix, persistent=False)
        self.register_buffer("last", last, persistent=False)


class MACEInteraction(nn.Module):
    """MACE's interaction block (mace-torch's ``RealAgnosticResidualInteractionBlock``): A_i and the skip term.

    ``A_i = Linear(1/n_avg Σ_j R(|r_ij|) · (Linear_up h_j ⊗ Y(r̂_ij)))`` is
    NequIP's convolution (`TensorProductConv`) without its self-connection:
    "uvu" paths from every irrep of ``irreps_in`` and of the harmonics into
    every irrep of ``irreps_out``, weighted per edge by a bias-free radial
    MLP. The skip term ``SC(h_i, z_i)`` is a tensor product of ``h_i`` with
    the species one-hot into ``irreps_skip`` (the layer's hidden irreps),
    returned beside A_i: the product block adds it after the symmetric
    contraction.

    Args:
        irreps_in: node features h entering (the first layer: ``"c x 0e"``).
        irreps_out: the A features, ``"c x 0e + c x 1o + ..."`` (one block per irrep of the harmonics).
        irreps_sh: edge spherical harmonics (`SphericalEdgeEmbedding.irreps_sh`).
        num_elements: width of the species one-hot.
        irreps_skip: the skip term's irreps (the product block's output).
        num_radial: as for `TensorProductConv`.
        radial_mlp: as for `TensorProductConv`.
        avg_num_neighbors: as for `TensorProductConv`.

    ``forward(x, one_hot, edge_index, edge_sh, edge_radial)`` -> (A [N,
    irreps_out.dim], sc [N, irreps_skip.dim]).
    """

    def __init__(self, irreps_in, irreps_out, irreps_sh, num_elements: int, irreps_skip, num_radial: int = 8,
                 radial_mlp: tuple[int, ...] = (64, 64, 64), avg_num_neighbors: float = 1.0):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.irreps_skip = o3.Irreps(irreps_skip)
        species = o3.Irreps(f"{num_elements}x0e")
        self.conv = TensorProductConv(self.irreps_in, self.irreps_out, irreps_sh, species, num_radial=num_radial,
                                      radial_mlp=tuple(radial_mlp), avg_num_neighbors=avg_num_neighbors,
                                      self_connection=False)
        self.skip = o3.FullyConnectedTensorProduct(self.irreps_in, species, self.irreps_skip)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.skip.weight.data.normal_()

    def forward(self, x: Tensor, one_hot: Tensor, edge_index: Tensor, edge_sh: Tensor,
                edge_radial: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(x, one_hot, edge_index, edge_sh, edge_radial), self.skip(x, one_hot)


class MACEProductBlock(nn.Module):
    """``h_i' = Linear(SymmetricContraction(A_i, z_i)) + sc_i``: MACE's product block.

    ``forward(a, species, sc=None)``: a [N, irreps_in.dim], species [N] element
    indices, sc [N, irreps_out.dim] or None -> [N, irreps_out.dim].
    """

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__()
        self.contraction = SymmetricContraction(irreps_in, irreps_out, correlation, num_elements)
        self.irreps_in, self.irreps_out = self.contraction.irreps_in, self.contraction.irreps_out
        self.linear = o3.Linear(self.irreps_out, self.irreps_out)

    def reset_parameters(self) -> None:
        self.contraction.reset_parameters()
        self.linear.weight.data.normal_()

    def forward(self, a: Tensor, species: Tensor, sc: Optional[Tensor] = None) -> Tensor:
        out = self.linear(self.contraction(a, species))
        return out if sc is None else out + sc


class MACEReadout(nn.Module):
    """A layer's energy readout: ``Linear(h_i) -> 0e``, or for MACE's last layer a small MLP
    ``Linear -> silu (normalised to unit second moment, e3nn's Activation) -> Linear`` through
    ``mlp_irreps`` hidden scalars. ``forward(h)`` [N, irreps_in.dim] -> [N] per-atom energies."""

    __jit_ignored_attributes__ = ["activation"]  # e3nn's Activation does not script: see `activation_paths`

    def __init__(self, irreps_in, mlp_irreps=None):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        if mlp_irreps is None:
            self.linear = o3.Linear(self.irreps_in, o3.Irreps("0e"))
        else:
            mlp_irreps = o3.Irreps(mlp_irreps)
            self.linear_1 = o3.Linear(self.irreps_in, mlp_irreps)
            self.activation = e3nn_nn.Activation(mlp_irreps, [torch.nn.functional.silu])
            self._activation_paths = activation_paths(self.activation)  # the same, for TorchScript
            self.linear_2 = o3.Linear(mlp_irreps, o3.Irreps("0e"))

    def reset_parameters(self) -> None:
        for module in self.children():
            if isinstance(module, o3.Linear):
                module.weight.data.normal_()

    def forward(self, h: Tensor) -> Tensor:
        if hasattr(self, "linear"):
            return self.linear(h).squeeze(-1)
        if torch.jit.is_scripting():
            return self.linear_2(apply_activation_paths(self.linear_1(h), self._activation_paths)).squeeze(-1)
        return self.linear_2(self.activation(self.linear_1(h))).squeeze(-1)
