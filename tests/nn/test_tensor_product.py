"""Tensor-product convolution, edge embedding and gate: symmetry to float64 precision, and NequIP's step by hand."""

import math

import pytest
import torch
from ase.build import bulk
from e3nn import o3
from e3nn.util.test import assert_equivariant

from geognn.graph import edge_vectors, lattice_offsets, periodic_radius_graph
from geognn.nn import EquivariantGate, SphericalEdgeEmbedding, TensorProductConv, species_one_hot
from geognn.nn.irreps import wigner_d
from geognn.nn.tensor_product import ChannelwiseTensorProduct, uvu_instructions

DTYPE = torch.float64
NUM_SPECIES = 3
E3NN_TOLERANCE = 1e-5  # e3nn's D_from_matrix: ~2e-7 off the exact matrix (see test_irreps.py), times O(10) outputs


def hidden_irreps(features: int, l_max: int, parity: bool) -> str:
    parities = ("e", "o") if parity else None
    return " + ".join(
        f"{features}x{l}{p}" for l in range(l_max + 1) for p in (parities or ("eo"[l % 2],))
    )


def random_graph(num_nodes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pos = 2.0 * torch.randn(num_nodes, 3, dtype=DTYPE, generator=generator)
    edges = [(j, i) for i in range(num_nodes) for j in range(num_nodes) if j != i and (pos[j] - pos[i]).norm() < 4.5]
    species = torch.randint(0, NUM_SPECIES, (num_nodes,), generator=generator)
    return pos, torch.tensor(edges).T, species_one_hot(species, NUM_SPECIES, DTYPE)


def block(l_max, parity, features=4, irreps_in=None):
    torch.manual_seed(l_max)
    embedding = SphericalEdgeEmbedding(l_max, num_radial=6, cutoff=4.5).to(DTYPE)
    irreps_in = irreps_in or f"{features}x0e"
    gate = EquivariantGate(hidden_irreps(features, l_max, parity), irreps_in, embedding.irreps_sh)
    conv = TensorProductConv(irreps_in, gate.irreps_in, embedding.irreps_sh, f"{NUM_SPECIES}x0e", num_radial=6,
                             radial_mlp=(16,), avg_num_neighbors=4.0).to(DTYPE)
    return embedding, conv, gate


@pytest.mark.parametrize("l_max", [1, 2, 3])
@pytest.mark.parametrize("parity", [True, False])
def test_conv_and_gate_pass_e3nns_assert_equivariant(l_max, parity):
    """e3nn's own test, in float64.

    e3nn 0.6's ``D_from_matrix`` is orthogonal but only within ~2e-7 of the
    true representation of R (`test_irreps.py` measures it against the exact
    `wigner_d`), so this check cannot resolve errors below ~1e-7 of the
    output scale; `test_conv_rotates_with_exact_wigner_matrices...` holds
    the same layers to 1e-12.
    """
    pos, edge_index, node_attr = random_graph()
    _, _, first_gate = block(l_max, parity)
    # Inputs with every l up to l_max (both parities with parity=True), so every path is exercised.
    embedding, conv, gate = block(l_max, parity, irreps_in=str(first_gate.irreps_out))
    x = torch.randn(pos.shape[0], conv.irreps_in.dim, dtype=DTYPE)

    def conv_gate(x, node_attr, edge_vec):
        return gate(conv(x, node_attr, edge_index, *embedding(edge_vec)))

    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    assert_equivariant(conv_gate, args_in=[x, node_attr, edge_vec],
                       irreps_in=[conv.irreps_in, conv.irreps_node_attr, "1o"], irreps_out=[gate.irreps_out],
                       tolerance=E3NN_TOLERANCE)
    assert_equivariant(gate, args_in=[torch.randn(5, gate.irreps_in.dim, dtype=DTYPE)], tolerance=E3NN_TOLERANCE)


@pytest.mark.parametrize("l_max", [1, 2, 3])
def test_conv_rotates_with_exact_wigner_matrices_and_is_permutation_equivariant(l_max):
    """geognn's own check: positions rotated by R (and reflected), atoms permuted; D from `wigner_d`."""
    pos, edge_index, node_attr = random_graph(seed=l_max)
    embedding, conv, gate = block(l_max, parity=True, irreps_in=f"3x0e + 2x1o + 2x{l_max}{'eo'[l_max % 2]}")
    x = torch.randn(pos.shape[0], conv.irreps_in.dim, dtype=DTYPE)

    def run(pos, x, node_attr, edge_index):
        edge_sh, edge_radial = embedding(pos[edge_index[0]] - pos[edge_index[1]])
        return gate(conv(x, node_attr, edge_index, edge_sh, edge_radial))

    out = run(pos, x, node_attr, edge_index)
    for proper in (True, False):
        rotation = o3.rand_matrix(dtype=DTYPE) * (1 if proper else -1)
        d_in, d_out = wigner_d(conv.irreps_in, rotation), wigner_d(gate.irreps_out, rotation)
        rotated = run(pos @ rotation.T, x @ d_in.T, node_attr, edge_index)
        assert torch.allclose(rotated, out @ d_out.T, atol=1e-12)
    perm = torch.randperm(pos.shape[0])
    inverse = torch.argsort(perm)
    permuted = run(pos[perm], x[perm], node_attr[perm], inverse[edge_index])
    assert torch.allclose(permuted, out[perm], atol=1e-13)


def test_periodic_graph_edges_work_through_the_embedding():
    """A small cell with a cutoff beyond it: rotating cell and positions rotates the output."""
    atoms = bulk("NaCl", "rocksalt", a=4.0)
    atoms.rattle(0.05, seed=0)
    pos = torch.tensor(atoms.positions, dtype=DTYPE)
    cell = torch.tensor(atoms.cell.array, dtype=DTYPE)
    pbc = torch.ones(3, dtype=torch.bool)
    edge_index, edge_shift = periodic_radius_graph(pos, 4.5, cell, pbc)
    node_attr = species_one_hot(torch.tensor([0, 1]), NUM_SPECIES, DTYPE)
    embedding, conv, gate = block(2, parity=True)
    x = torch.randn(2, conv.irreps_in.dim, dtype=DTYPE)

    def run(pos, cell):
        edge_vec, _ = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
        return gate(conv(x, node_attr, edge_index, *embedding(edge_vec)))

    rotation = o3.rand_matrix(dtype=DTYPE)
    out = run(pos, cell)
    assert torch.allclose(run(pos @ rotation.T, cell @ rotation.T), out @ wigner_d(gate.irreps_out, rotation).T,
                          atol=1e-12)
    assert edge_index.shape[1] > 2 * 12  # images of both atoms, own images included


# --------------------------------------------------------------------------- the fused product equals e3nn's


def channelwise_pair(irreps_in, l_max, irreps_out):
    irreps_sh = o3.Irreps.spherical_harmonics(l_max)
    mid, instructions = uvu_instructions(irreps_in, irreps_sh, irreps_out)
    ours = ChannelwiseTensorProduct(irreps_in, irreps_sh, mid, instructions).to(DTYPE)
    return ours, ours.reference(DTYPE)


@pytest.mark.parametrize("irreps_in, l_max, irreps_out", [
    ("4x0e", 2, "4x0e + 4x1o + 4x2e"),
    ("3x0e + 2x1o + 4x1e + 1x2e + 2x2o", 2, "5x0e + 2x0o + 3x1o + 3x1e + 2x2e + 2x2o"),  # unequal multiplicities
    ("2x0e + 2x1o + 2x2e + 2x3o", 3, "2x0e + 2x1o + 2x2e + 2x3o + 2x3e"),
    ("2x1o + 3x2e", 1, "1x0e"),  # some input irreps reach no output
])
def test_channelwise_product_equals_e3nns_with_first_and_second_derivatives(irreps_in, l_max, irreps_out):
    """Same inputs, same weight layout: outputs, gradients and the gradient of a gradient (force training)."""
    ours, theirs = channelwise_pair(irreps_in, l_max, irreps_out)
    assert ours.weight_numel == theirs.weight_numel and ours.irreps_out == theirs.irreps_out
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(9, dim, dtype=DTYPE, generator=generator, requires_grad=True)
              for dim in (ours.irreps_in1.dim, ours.irreps_in2.dim, ours.weight_numel)]
    probe = torch.randn(9, ours.irreps_out.dim, dtype=DTYPE, generator=generator)
    results = []
    for tp in (ours, theirs):
        out = tp(*inputs)
        grads = torch.autograd.grad((out * probe).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum((g**2).sum() for g in grads[:2]), inputs)
        results.append((out, *grads, *second))
    for got, expected in zip(*results):
        assert torch.allclose(got, expected, atol=1e-12, rtol=0), (got - expected).abs().max()
    assert results[1][0].abs().max() > 0.1


def test_channelwise_product_parts_sum_before_assembly():
    """Summing `forward_parts` over edges, then `assemble`, equals summing the assembled products."""
    ours, theirs = channelwise_pair("2x0e + 2x1o + 2x2e", 2, "2x0e + 2x1o + 2x1e + 2x2e")
    generator = torch.Generator().manual_seed(1)
    x1, x2, w = (torch.randn(6, dim, dtype=DTYPE, generator=generator)
                 for dim in (ours.irreps_in1.dim, ours.irreps_in2.dim, ours.weight_numel))
    summed = ours.assemble([part.sum(0, keepdim=True) for part in ours.forward_parts(x1, x2, w)])
    assert torch.allclose(summed, theirs(x1, x2, w).sum(0, keepdim=True), atol=1e-12)


def test_channelwise_product_constants_survive_a_float32_round_trip():
    """Built in float32, then `.double()`: exact float64 constants again (no float32 rounding left)."""
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    mid, instructions = uvu_instructions("2x1o + 2x2e", irreps_sh, "2x0e + 2x1o + 2x2e")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        ours = ChannelwiseTensorProduct("2x1o + 2x2e", irreps_sh, mid, instructions)
    finally:
        torch.set_default_dtype(default)
    assert ours.kernel_0.dtype == torch.float32
    ours = ours.double()
    exact = ChannelwiseTensorProduct("2x1o + 2x2e", irreps_sh, mid, instructions).to(DTYPE)
    for name in ("kernel_0", "kernel_1", "expand_0"):
        assert getattr(ours, name).dtype == DTYPE
        assert torch.equal(getattr(ours, name), getattr(exact, name))
    assert (ours.kernel_1.float().double() != ours.kernel_1).any()  # float32 would have rounded them


def test_channelwise_product_rejects_what_it_cannot_fuse():
    with pytest.raises(ValueError, match="multiplicity 1"):
        ChannelwiseTensorProduct("2x1o", "2x1o", "2x0e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="uvu"):
        ChannelwiseTensorProduct("2x1o", "1x1o", "2x0e", [(0, 0, 0, "uvw", True)])
    with pytest.raises(ValueError, match="exactly one instruction"):  # two paths summed into one block
        ChannelwiseTensorProduct("2x1o + 2x1o", "1x1o", "2x0e", [(0, 0, 0, "uvu", True), (1, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="exactly one instruction"):  # an output block no path reaches
        ChannelwiseTensorProduct("2x1o", "1x1o", "2x0e + 2x1e", [(0, 0, 0, "uvu", True)])


# --------------------------------------------------------------------------- NequIP's equations by hand


def test_one_convolution_is_nequips_equation_by_hand():
    """x'_i = Linear_2(1/n Σ_j R(|r_ij|) (Linear_1 x_j ⊗ Y(r̂_ij))) + SC(x_i, species_i), with loops over edges.

    Built from the primitives (e3nn's linear maps and tensor product, the
    radial MLP) but wired by hand, so a conv that used x_i for x_j, the
    reversed edge direction, the receiver's radial weights or forgot the
    neighbour average or the self-connection fails.
    """
    pos, edge_index, node_attr = random_graph(num_nodes=5, seed=3)
    embedding, conv, _ = block(2, parity=True, irreps_in="3x0e + 2x1o + 1x2e")
    x = torch.randn(5, conv.irreps_in.dim, dtype=DTYPE)
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    got = conv(x, node_attr, edge_index, *embedding(edge_vec))

    sh = o3.SphericalHarmonics(embedding.irreps_sh, normalize=True, normalization="component")
    e3nn_tp = conv.tp.reference(DTYPE)  # e3nn's own TensorProduct with the conv's instructions
    expected = []
    for i in range(5):
        total = torch.zeros(conv.irreps_mid.dim, dtype=DTYPE)
        for j in range(5):
            if j == i or (pos[j] - pos[i]).norm() >= 4.5:
                continue
            r = pos[j] - pos[i]  # from receiver i to sender j
            d = r.norm()
            n = torch.arange(1, 7, dtype=DTYPE)
            u = d / 4.5
            envelope = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8  # p = 6
            bessel = math.sqrt(2 / 4.5) * torch.sin(embedding.bessel.frequencies * u) / d * envelope
            assert torch.allclose(embedding.bessel.frequencies, n * math.pi)
            weights = conv.radial(bessel.unsqueeze(0))
            total = total + e3nn_tp(conv.linear_1(x[j : j + 1]), sh(r.unsqueeze(0)), weights)[0]
        out = conv.linear_2((total / 4.0).unsqueeze(0)) + conv.self_connection(x[i : i + 1], node_attr[i : i + 1])
        expected.append(out[0])
    assert torch.allclose(got, torch.stack(expected), atol=1e-12)


def test_uvu_path_is_a_clebsch_gordan_product_channel_by_channel():
    """One "uvu" path 2x1o ⊗ 1o -> 2x1e: channel u of the output is w_u (x_u × y) up to e3nn's constant.

    The l=1 ⊗ l=1 -> l=1 coupling is the cross product (Wigner 3j of (1,1,1)
    is the Levi-Civita symbol / √6); channel u must only see channel u.
    """
    embedding, conv, _ = block(1, parity=True, irreps_in="2x1o")
    tp = conv.tp.reference(DTYPE)
    path = [k for k, ins in enumerate(tp.instructions) if tp.irreps_out[ins.i_out].ir == o3.Irrep("1e")]
    assert len(path) == 1
    weights = torch.zeros(1, tp.weight_numel, dtype=DTYPE)
    start = sum(ins.path_shape[0] for ins in tp.instructions[: path[0]])
    weights[0, start : start + 2] = torch.tensor([1.0, -2.0])
    x = torch.randn(1, 6, dtype=DTYPE)
    y = torch.tensor([[0.0, 0.3, -1.2, 0.5]], dtype=DTYPE)  # 0e, then 1o (x, y, z)
    out = tp(x, y, weights)
    part = conv.irreps_mid.slices()[[ir for _, ir in conv.irreps_mid].index(o3.Irrep("1e"))]
    got = out[0, part].reshape(2, 3)
    cross = torch.cross(x[0].reshape(2, 3), y[0, 1:].expand(2, 3), dim=-1) * torch.tensor([[1.0], [-2.0]], dtype=DTYPE)
    scale = got.flatten() @ cross.flatten() / (cross.flatten() @ cross.flatten())
    assert torch.allclose(got, scale * cross, atol=1e-13)
    assert abs(float(scale)) > 0.1


def test_bad_shapes_are_named():
    pos, edge_index, node_attr = random_graph()
    embedding, conv, gate = block(1, parity=False)
    edge_sh, edge_radial = embedding(pos[edge_index[0]] - pos[edge_index[1]])
    with pytest.raises(ValueError, match="x has 5 components"):
        conv(torch.zeros(pos.shape[0], 5, dtype=DTYPE), node_attr, edge_index, edge_sh, edge_radial)
    with pytest.raises(ValueError, match="gate expects"):
        gate(torch.zeros(3, 2, dtype=DTYPE))
    with pytest.raises(ValueError, match="l_max must be"):
        SphericalEdgeEmbedding(4)
