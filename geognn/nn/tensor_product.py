"""e3nn tensor-product convolution (Tensor Field Networks, NequIP) and its edge embedding.

Node features are one irreps tensor ``x`` [N, irreps_in.dim]. One
convolution (Batzner et al., Nat. Commun. 2022, eq. 3 and Fig. 1) is

    x'_i = Linear_2( 1/n_avg Σ_{j ∈ N(i)} R(|r_ij|) · (Linear_1 x_j ⊗ Y(r̂_ij)) ) + SC(x_i, species_i)

with Y the spherical harmonics of the edge direction, R a radial MLP giving
the weights of each "uvu" path of the tensor product per edge (channel u of
the sender times Y gives channel u of the output), n_avg the average number
of neighbours, and SC NequIP's self-connection: a tensor product of the
receiver's features with its one-hot species.

The tensor product is e3nn's ``o3.TensorProduct`` with "uvu" instructions,
evaluated by `ChannelwiseTensorProduct` (equal to e3nn's to 1e-12 with its
derivatives, several times faster under the double backward of force
training; ``conv.tp.reference()`` is e3nn's own module).

In MPNN terms: ``message`` is the weighted tensor product per edge,
``aggregate`` the sum over senders divided by ``avg_num_neighbors`` (the
foundation's `ScalarVectorMessagePassing`), ``update`` the linear map plus the
self-connection.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from e3nn import o3
from torch import Tensor, nn

from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import MLP, Float64Constants
from geognn.nn.radial import BesselBasis, PolynomialEnvelope


class SphericalEdgeEmbedding(nn.Module):
    """Edge attributes: spherical harmonics of the edge direction and a smooth radial basis.

    ``forward(edge_vec)`` returns ``edge_sh`` [E, irreps_sh.dim] (l = 0..l_max,
    unit-normalised directions, e3nn's "component" normalisation, as NequIP)
    and ``edge_radial`` [E, num_radial] (Bessel functions times the
    polynomial envelope of exponent p, zero with p - 1 derivatives at the cutoff).
    """

    def __init__(self, l_max: int, num_radial: int = 8, cutoff: float = 5.0, envelope_exponent: int = 6,
                 trainable_radial: bool = True):
        super().__init__()
        if not 0 <= l_max <= 3:
            raise ValueError(f"l_max must be 0, 1, 2 or 3, got {l_max}")
        self.l_max = l_max
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.irreps_in = o3.Irreps("1o")
        self.irreps_out = [self.irreps_sh, o3.Irreps(f"{num_radial}x0e")]
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.bessel = BesselBasis(num_radial, cutoff, trainable=trainable_radial)
        self.envelope = PolynomialEnvelope(cutoff, exponent=envelope_exponent)

    def reset_parameters(self) -> None:
        self.bessel.reset_parameters()

    def forward(self, edge_vec: Tensor) -> tuple[Tensor, Tensor]:
        """edge_vec [E, 3] (``pos[j] - pos[i]`` + shift) -> (edge_sh [E, irreps_sh.dim], edge_radial [E, num_radial])."""
        edge_len = torch.linalg.vector_norm(edge_vec, dim=-1)
        radial = self.bessel(edge_len) * self.envelope(edge_len).unsqueeze(-1)
        return self.sh(edge_vec), radial

    def extra_repr(self) -> str:
        return f"l_max={self.l_max}, irreps_sh={self.irreps_sh}"


def uvu_instructions(irreps_in, irreps_sh, irreps_out) -> tuple[o3.Irreps, list[tuple]]:
    """NequIP's channel-wise paths: every (input irrep) x (harmonic) -> an irrep of ``irreps_out``.

    Returns the tensor product's output irreps (sorted, one block per path)
    and its instructions ``(i_in, i_sh, i_out, "uvu", True)``.
    """
    irreps_in, irreps_sh, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_sh), o3.Irreps(irreps_out)
    wanted = {ir for _, ir in irreps_out}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid = o3.Irreps(mid)
    mid_sorted, permutation, _ = mid.sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return mid_sorted, instructions


class ChannelwiseTensorProduct(Float64Constants, nn.Module):
    """e3nn's "uvu" tensor product with per-sample weights, evaluated in a few large operations.

    Computes exactly what ``o3.TensorProduct(irreps_in1, irreps_in2, irreps_out,
    instructions, shared_weights=False, internal_weights=False)`` computes (same
    inputs, same weight layout, same output layout; tested equal to it), where
    every instruction is ``(i1, i2, i_out, "uvu", True)`` and every irrep of
    ``irreps_in2`` has multiplicity 1 (spherical harmonics):

        out_p[z, u, k] = w[z, p, u] Σ_ij K_p[i, j, k] x1_{i1(p)}[z, u, i] x2_{i2(p)}[z, j]

    with K_p the Wigner 3j symbol times e3nn's path normalisation, read off
    e3nn's own float64 product at construction. e3nn evaluates one einsum per
    path and slices its inputs and outputs per path; under double backward
    (forces in the loss) the slices' gradients become one zero-filled tensor of
    the full size per path. Here the paths that share an input irrep ``i1``
    form one group: ``x2`` is contracted with their stacked K_p first (one
    matrix product giving a [Z, d1, columns] coupling, with no channel axis),
    then one batched product per sample applies it to all channels at once,
    then the weights. ``forward_parts`` returns one tensor per group
    [Z, mul, columns], so a convolution can sum them over neighbours before
    `assemble` puts them in e3nn's layout on far fewer rows.
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions):
        super().__init__()
        self.irreps_in1, self.irreps_in2 = o3.Irreps(irreps_in1), o3.Irreps(irreps_in2)
        self.irreps_out = o3.Irreps(irreps_out)
        self.instructions = [tuple(ins) for ins in instructions]
        if any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(f"irreps_in2 must have multiplicity 1 everywhere, got {self.irreps_in2}")
        if any(ins[3] != "uvu" or not ins[4] for ins in self.instructions):
            raise ValueError("only weighted 'uvu' instructions are supported")
        targets = [ins[2] for ins in self.instructions]
        if sorted(targets) != list(range(len(self.irreps_out))):
            raise ValueError("every irrep of irreps_out must be the output of exactly one instruction "
                             f"(got outputs {targets} for {len(self.irreps_out)} irreps); see uvu_instructions")
        reference = self.reference(torch.float64)
        self.weight_numel = reference.weight_numel
        weight_start = [0]  # first weight column of each instruction (and the end)
        for ins in reference.instructions:
            weight_start.append(weight_start[-1] + ins.path_shape[0])
        kernels = _path_kernels(reference, weight_start)  # per instruction: K_p [d1, d2, d3], float64
        out_start = [s.start for s in self.irreps_out.slices()]
        in2_start = [s.start for s in self.irreps_in2.slices()]
        self._split = [mul_ir.dim for mul_ir in self.irreps_in1]
        self._groups = []  # per input irrep: (kernel buffer, expand buffer, mul, d1, paths, columns)
        gather = torch.empty(self.irreps_out.dim, dtype=torch.long)  # e3nn output column <- flat parts column
        offset, weight_order = 0, []  # weight_order: e3nn's weight columns regrouped as [group][u][path]
        for g, (mul, ir) in enumerate(self.irreps_in1):
            paths = [p for p, ins in enumerate(self.instructions) if ins[0] == g]
            columns = sum(kernels[p].shape[2] for p in paths)
            kernel = torch.zeros(ir.dim, self.irreps_in2.dim, columns, dtype=torch.float64)
            expand = torch.zeros(len(paths), columns, dtype=torch.float64)
            weight_index = torch.empty(mul, len(paths), dtype=torch.long)
            column = 0
            for q, p in enumerate(paths):
                _, i2, i_out, _, _ = self.instructions[p]
                d2, d3 = kernels[p].shape[1:]
                kernel[:, in2_start[i2]:in2_start[i2] + d2, column:column + d3] = kernels[p]
                expand[q, column:column + d3] = 1
                weight_index[:, q] = torch.arange(weight_start[p], weight_start[p] + mul)
                # parts[g] is [Z, mul, columns]; e3nn's output block of this path is [mul, d3] at out_start
                u, k = torch.meshgrid(torch.arange(mul), torch.arange(d3), indexing="ij")
                gather[out_start[i_out] + (u * d3 + k).flatten()] = (offset + u * columns + column + k).flatten()
                column += d3
            kernel = kernel.transpose(0, 1).reshape(self.irreps_in2.dim, ir.dim * columns)
            self.register_constant(f"kernel_{g}", kernel)
            self.register_constant(f"expand_{g}", expand)
            weight_order.append(weight_index.flatten())
            self._groups.append((f"kernel_{g}", f"expand_{g}", mul, ir.dim, len(paths), columns))
            offset += mul * columns
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("weight_order", torch.cat(weight_order), persistent=False)
        self._weight_split = [len(order) for order in weight_order]

    def reference(self, dtype: Optional[torch.dtype] = None) -> o3.TensorProduct:
        """e3nn's own TensorProduct with these instructions, its constants in ``dtype``."""
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype or default)
        try:  # e3nn bakes its Clebsch-Gordan constants in the default dtype at construction
            return o3.TensorProduct(self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions,
                                    shared_weights=False, internal_weights=False)
        finally:
            torch.set_default_dtype(default)

    def forward_parts(self, x1: Tensor, x2: Tensor, weight: Tensor) -> List[Tensor]:
        """x1 [Z, irreps_in1.dim], x2 [Z, irreps_in2.dim], weight [Z, weight_numel] -> per group [Z, mul, columns]."""
        parts: List[Tensor] = []
        # One gather regroups the weights (per group [u][path]); per-group gathers would each leave a
        # zero-filled [Z, weight_numel] gradient behind.
        weights = torch.split(weight.index_select(1, self.weight_order), self._weight_split, dim=-1)
        if torch.jit.is_scripting():
            # TorchScript reads buffers by literal names only: the scripted module reads each group's
            # constants from a module of its own (made by `__prepare_scriptable__`), the same tensors.
            inputs = torch.split(x1, self._split, -1)
            for group in self.script_groups:
                parts.append(_group_product(x2, inputs[group.index], weights[group.index], group.kernel, group.expand,
                                            group.mul, group.d1, group.num_paths, group.columns))
            return parts
        for (kernel, expand, mul, d1, num_paths, columns), x, w in zip(self._groups, torch.split(x1, self._split, -1),
                                                                       weights):
            if columns == 0:
                continue
            parts.append(_group_product(x2, x, w, getattr(self, kernel), getattr(self, expand), mul, d1, num_paths,
                                        columns))
        return parts

    def assemble(self, parts: List[Tensor]) -> Tensor:
        """`forward_parts`' output (or its sum over neighbours) [Z, ...] -> [Z, irreps_out.dim] in e3nn's layout."""
        flat = torch.cat([part.reshape(part.shape[0], -1) for part in parts], dim=-1)
        return flat.index_select(1, self.gather)

    def forward(self, x1: Tensor, x2: Tensor, weight: Tensor) -> Tensor:
        return self.assemble(self.forward_parts(x1, x2, weight))

    def __prepare_scriptable__(self) -> "ChannelwiseTensorProduct":
        """Called by `torch.jit.script`: (re)makes ``script_groups``, one `_PathGroup` per group with paths,
        holding that group's current buffers (the same tensors), which the scripted `forward_parts` reads.

        The module is changed in place, not copied: torch remembers prepared modules by ``id``, and
        a copy would let the original be freed and its ``id`` reused by another module of the model.
        """
        self.script_groups = nn.ModuleList([
            _PathGroup(g, getattr(self, kernel), getattr(self, expand), mul, d1, num_paths, columns)
            for g, (kernel, expand, mul, d1, num_paths, columns) in enumerate(self._groups) if columns > 0
        ])
        return self

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, {len(self.instructions)} uvu paths"


def _group_product(x2: Tensor, x: Tensor, w: Tensor, kernel: Tensor, expand: Tensor, mul: int, d1: int,
                   num_paths: int, columns: int) -> Tensor:
    """One group of `ChannelwiseTensorProduct.forward_parts`: x [Z, mul d1], w [Z, mul paths] -> [Z, mul, columns]."""
    z = x.shape[0]
    # Harmonics into the coupling first ([Z, d1, columns], no mul factor), then channel by channel.
    coupling = (x2 @ kernel).reshape(z, d1, columns)
    out = torch.bmm(x.reshape(z, mul, d1), coupling)
    return out * (w.reshape(z, mul, num_paths) @ expand)


class _PathGroup(nn.Module):
    """The constants of one group of a scripted `ChannelwiseTensorProduct`: its kernel and expand
    buffers and sizes, and ``index``, the group's position among the input irreps."""

    def __init__(self, index: int, kernel: Tensor, expand: Tensor, mul: int, d1: int, num_paths: int, columns: int):
        super().__init__()
        self.index, self.mul, self.d1, self.num_paths, self.columns = index, mul, d1, num_paths, columns
        self.register_buffer("kernel", kernel, persistent=False)
        self.register_buffer("expand", expand, persistent=False)


def _path_kernels(tp: o3.TensorProduct, weight_start: list[int]) -> list[Tensor]:
    """K_p [d1, d2, d3] of every instruction of a float64 uvu product, read off its outputs on basis vectors."""
    kernels = []
    slices1, slices2, slices_out = tp.irreps_in1.slices(), tp.irreps_in2.slices(), tp.irreps_out.slices()
    for p, ins in enumerate(tp.instructions):
        d1, d2 = tp.irreps_in1[ins.i_in1].ir.dim, tp.irreps_in2[ins.i_in2].ir.dim
        d3 = tp.irreps_out[ins.i_out].ir.dim
        i, j = torch.meshgrid(torch.arange(d1), torch.arange(d2), indexing="ij")
        rows = torch.arange(d1 * d2)
        x1 = torch.zeros(d1 * d2, tp.irreps_in1.dim, dtype=torch.float64)
        x2 = torch.zeros(d1 * d2, tp.irreps_in2.dim, dtype=torch.float64)
        x1[rows, slices1[ins.i_in1].start + i.flatten()] = 1  # channel u = 0
        x2[rows, slices2[ins.i_in2].start + j.flatten()] = 1
        weight = torch.zeros(d1 * d2, tp.weight_numel, dtype=torch.float64)
        weight[:, weight_start[p]] = 1  # this path, channel 0
        out = tp(x1, x2, weight)[:, slices_out[ins.i_out].start:slices_out[ins.i_out].start + d3]
        kernels.append(out.reshape(d1, d2, d3))
    return kernels


class TensorProductConv(ScalarVectorMessagePassing):
    """NequIP's convolution as message / aggregate / update on the radius graph.

    Args:
        irreps_in: node features entering, e.g. ``"32x0e"`` or ``"32x0e + 32x1o + 32x2e"``.
        irreps_out: node features leaving (for a gated network, the gate's ``irreps_in``).
        irreps_sh: edge spherical harmonics (`SphericalEdgeEmbedding.irreps_sh`).
        irreps_node_attr: species one-hot, ``"Sx0e"``, for the self-connection.
        num_radial: width of the radial basis.
        radial_mlp: hidden sizes of the radial MLP that gives each edge its path weights.
        avg_num_neighbors: the neighbour sum is divided by this.
        self_connection: add NequIP's SC(x_i, species_i) term.
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        irreps_sh,
        irreps_node_attr,
        num_radial: int = 8,
        radial_mlp: tuple[int, ...] = (64, 64),
        avg_num_neighbors: float = 1.0,
        self_connection: bool = True,
        activation: str = "silu",
    ):
        super().__init__(avg_num_neighbors)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_node_attr = o3.Irreps(irreps_node_attr)
        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        # Plain ints for the runtime checks: torch.compile cannot guard on Irreps objects.
        self._input_dims = (self.irreps_in.dim, self.irreps_node_attr.dim, self.irreps_sh.dim)
        self.irreps_mid, self._instructions = uvu_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        self.tp = ChannelwiseTensorProduct(self.irreps_in, self.irreps_sh, self.irreps_mid, self._instructions)
        # No biases (as NequIP's radial network): zero basis -> zero weights, so edges fade out at the cutoff.
        self.radial = MLP([num_radial, *radial_mlp, self.tp.weight_numel], activation=activation, bias=False)
        self.linear_2 = o3.Linear(self.irreps_mid.simplify(), self.irreps_out)
        self.self_connection = (
            o3.FullyConnectedTensorProduct(self.irreps_in, self.irreps_node_attr, self.irreps_out)
            if self_connection else None
        )

    def _describe(self, name: str) -> str:
        return str({"x": self.irreps_in, "node_attr": self.irreps_node_attr, "edge_sh": self.irreps_sh}[name])

    def reset_parameters(self) -> None:
        self.radial.reset_parameters()
        for module in (self.linear_1, self.linear_2, self.self_connection):
            if module is not None:
                module.weight.data.normal_()  # e3nn's own initialisation: unit normal, normalised in the forward

    def forward(
        self,
        x: Tensor,
        node_attr: Tensor,
        edge_index: Tensor,
        edge_sh: Tensor,
        edge_radial: Tensor,
    ) -> Tensor:
        """
        Args:
            x: [N, irreps_in.dim] node features.
            node_attr: [N, irreps_node_attr.dim] species one-hot.
            edge_index: [2, E] (sender j, receiver i).
            edge_sh: [E, irreps_sh.dim] spherical harmonics of ``edge_vec = pos[j] - pos[i]``.
            edge_radial: [E, num_radial] radial basis of the edge lengths.

        Returns:
            [N, irreps_out.dim]
        """
        if not torch.jit.is_scripting():  # the scripted layer leaves the check to the shapes of its products
            for name, tensor, dim in zip(("x", "node_attr", "edge_sh"), (x, node_attr, edge_sh), self._input_dims):
                if tensor.shape[-1] != dim:
                    raise ValueError(f"{name} has {tensor.shape[-1]} components, expected {dim} "
                                     f"({self._describe(name)})")
        weights = self.radial(edge_radial)  # [E, tp.weight_numel]
        # The three steps called directly, not through PyG's propagate (see geognn.nn.message_passing).
        sender, receiver = edge_index[0], edge_index[1]
        messages = self.message(self.linear_1(x).index_select(0, sender), edge_sh, weights)
        return self.update(self.aggregate(messages, receiver, dim_size=x.shape[0]), x, node_attr)

    def message(self, sender_j: Tensor, edge_sh: Tensor, weights: Tensor) -> List[Tensor]:
        # The weighted tensor product, one [E, mul, columns] tensor per input irrep (see ChannelwiseTensorProduct).
        return self.tp.forward_parts(sender_j, edge_sh, weights)

    def update(self, inputs: List[Tensor], x: Tensor, node_attr: Tensor) -> Tensor:
        aggregated = self.tp.assemble(inputs)  # [N, irreps_mid.dim], already divided by avg_num_neighbors
        out = self.linear_2(aggregated)
        if self.self_connection is not None:
            out = out + self.self_connection(x, node_attr)
        return out

    def extra_repr(self) -> str:
        return (f"irreps_in={self.irreps_in}, irreps_out={self.irreps_out}, irreps_sh={self.irreps_sh}, "
                f"irreps_mid={self.irreps_mid}, avg_num_neighbors={float(self.avg_num_neighbors)}")


def species_one_hot(species: Tensor, num_species: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """[N] species indices -> [N, num_species] one-hot node attributes (irreps ``"num_species x 0e"``)."""
    return torch.nn.functional.one_hot(species, num_species).to(dtype or torch.get_default_dtype())
