"""DimeNet / DimeNet++ blocks against the papers' equations, computed by hand with loops over atoms.

Symmetry tests pass for a block that wires the wrong edges (m_ji instead of
m_kj, the angle at the wrong atom, d_ji instead of d_kj in the spherical
basis). These tests rebuild one step of each block from the equations of
Gasteiger et al. (ICLR 2020, eqs. 3-5 and Fig. 4; DimeNet++ Fig. 1) with plain
loops over atoms k, j, i and angles from arccos of the coordinates, so they
share no indexing, triplet or angle code with the blocks.
"""

import math

import pytest
import torch
from ase.build import molecule
from torch.nn.functional import silu

from geognn.graph import triplets
from geognn.nn import (
    DimeNetEmbedding,
    DimeNetInteraction,
    DimeNetOutput,
    DimeNetPPInteraction,
    DimeNetRadialBasis,
    SphericalBasis,
    triplet_cos_angle,
)
from geognn.nn.spherical import zonal_harmonics

F, R, S, CUTOFF = 6, 4, 3, 5.0


def setup(seed=0):
    """NH3, rattled: 4 atoms, all 12 directed edges within the cutoff, 24 triplets."""
    torch.manual_seed(seed)
    atoms = molecule("NH3")
    atoms.rattle(0.1, seed=seed)
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    z = torch.tensor(atoms.numbers)
    edges = [(j, i) for i in range(4) for j in range(4) if j != i]  # (sender j, receiver i)
    edge_index = torch.tensor(edges).T
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    edge_len = edge_vec.norm(dim=-1)
    rbf_layer = DimeNetRadialBasis(R, CUTOFF).double()
    sbf_layer = SphericalBasis(S, R, CUTOFF).double()
    idx_kj, idx_ji = triplets(edge_index, 4)
    cos = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji)
    return dict(pos=pos, z=z, edges=edges, edge_index=edge_index, edge_len=edge_len, rbf=rbf_layer(edge_len),
                sbf=sbf_layer(edge_len, cos, idx_kj), sbf_layer=sbf_layer, idx_kj=idx_kj, idx_ji=idx_ji)


def randomize(module):
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(0.5 * torch.randn_like(param))
    return module


def lin(layer, x):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)


def residual(layer, x):
    return x + silu(lin(layer.lin2, silu(lin(layer.lin1, x))))


def by_hand_triplets(g):
    """For each edge (j, i): its triplets (k, edge id of k->j, a_SBF(d_kj, α_kji)) with α from arccos."""
    edge_id = {edge: e for e, edge in enumerate(g["edges"])}
    pos = g["pos"]
    out = []
    for j, i in g["edges"]:
        items = []
        for k in range(4):
            if k in (i, j):
                continue
            kj = edge_id[(k, j)]
            a, b = pos[k] - pos[j], pos[i] - pos[j]
            alpha = torch.arccos(torch.dot(a, b) / (a.norm() * b.norm()))  # ∠kji, at atom j
            radial = g["sbf_layer"].radial(g["edge_len"][kj : kj + 1])[0]  # [S, R], of d_kj
            angular = zonal_harmonics(S, torch.cos(alpha))  # [S]
            items.append((kj, (radial * angular[:, None]).flatten()))
        out.append(items)
    return out


def update(block, m_ji, combined):
    h = silu(lin(block.lin_ji, m_ji)) + combined
    for layer in block.layers_before_skip:
        h = residual(layer, h)
    h = silu(lin(block.lin, h)) + m_ji
    for layer in block.layers_after_skip:
        h = residual(layer, h)
    return h


@pytest.mark.parametrize("fused", [True, False])
def test_dimenetpp_interaction_is_the_papers_step(fused):
    g = setup()
    block = randomize(DimeNetPPInteraction(F, 5, 3, S, R, fused=fused).double())
    m = torch.randn(len(g["edges"]), F, dtype=torch.float64)
    got = block(m, g["rbf"], g["sbf"], g["idx_kj"], g["idx_ji"])

    expected = []
    for e, items in enumerate(by_hand_triplets(g)):
        aggregated = 0.0
        for kj, sbf in items:
            x = silu(lin(block.lin_kj, m[kj])) * lin(block.lin_rbf2, lin(block.lin_rbf1, g["rbf"][kj]))
            x = silu(lin(block.lin_down, x))
            aggregated = aggregated + x * lin(block.lin_sbf2, lin(block.lin_sbf1, sbf))
        expected.append(update(block, m[e], silu(lin(block.lin_up, aggregated))))
    assert torch.allclose(got, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_dimenet_interaction_is_the_papers_bilinear_step():
    g = setup(1)
    block = randomize(DimeNetInteraction(F, 3, S, R).double())
    m = torch.randn(len(g["edges"]), F, dtype=torch.float64)
    got = block(m, g["rbf"], g["sbf"], g["idx_kj"], g["idx_ji"])

    expected = []
    for e, items in enumerate(by_hand_triplets(g)):
        aggregated = torch.zeros(F, dtype=torch.float64)
        for kj, sbf in items:
            x = silu(lin(block.lin_kj, m[kj])) * lin(block.lin_rbf, g["rbf"][kj])
            basis = lin(block.lin_sbf, sbf)  # [num_bilinear]
            for out in range(F):  # eq. 5: Σ_{b, f} W[out, b, f] a_b x_f
                aggregated[out] += sum(block.W[out, b, f] * basis[b] * x[f] for b in range(3) for f in range(F))
        expected.append(update(block, m[e], aggregated))
    assert torch.allclose(got, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_embedding_and_output_blocks_by_hand():
    g = setup(2)
    embedding = randomize(DimeNetEmbedding(R, F, max_atomic_number=10).double())
    m = embedding(g["z"], g["rbf"], g["edge_index"])
    h = embedding.emb.weight[g["z"]]
    for e, (j, i) in enumerate(g["edges"]):  # m_ji = σ(W [h_i ‖ h_j ‖ σ(W_rbf e_RBF(d_ji))]) : receiver first
        expected = silu(lin(embedding.lin, torch.cat([h[i], h[j], silu(lin(embedding.lin_rbf, g["rbf"][e]))])))
        assert torch.allclose(m[e], expected, rtol=1e-12, atol=1e-12)

    for width in (None, 7):  # DimeNet, and DimeNet++'s up-projection
        output = randomize(DimeNetOutput(R, F, 1, num_layers=2, out_emb_channels=width,
                                         output_init="glorot_orthogonal").double())
        got = output(m, g["rbf"], g["edge_index"][1], 4)
        for i in range(4):
            x = sum(lin(output.lin_rbf, g["rbf"][e]) * m[e] for e, (_, r) in enumerate(g["edges"]) if r == i)
            if width:
                x = lin(output.lin_up, x)
            for layer in output.lins:
                x = silu(lin(layer, x))
            assert torch.allclose(got[i], lin(output.lin, x), rtol=1e-12, atol=1e-12)


def test_angle_vertices():
    """α_kji (at j, the paper's) and α_jik (at i, the reference DimeNet code's) on a right triangle."""
    pos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)  # k, j, i
    edge_index = torch.tensor([[0, 1], [1, 2]])  # k -> j, j -> i
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    edge_len = edge_vec.norm(dim=-1)
    idx_kj, idx_ji = torch.tensor([0]), torch.tensor([1])
    at_j = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, "j")
    at_i = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, "i")
    assert torch.allclose(at_j, torch.tensor([0.0], dtype=torch.float64), atol=1e-15)  # 90° at j
    assert torch.allclose(at_i, torch.tensor([2.0 / math.sqrt(5.0)], dtype=torch.float64))  # tan α_jik = 1/2
    with pytest.raises(ValueError, match="unknown angle vertex"):
        triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, "k")


def test_radial_basis_is_bessel_times_envelope():
    d = torch.tensor([0.8, 2.0, 4.9, 5.0, 6.0], dtype=torch.float64)
    layer = DimeNetRadialBasis(R, CUTOFF, envelope_exponent=5).double()
    layer.bessel.reset_parameters()  # n·π again, rounded to float64 now that the parameter is float64
    x = d / CUTOFF
    p = 6  # envelope_exponent + 1
    u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    u = torch.where(x < 1, u, torch.zeros_like(u))
    n = torch.arange(1, R + 1, dtype=torch.float64)
    expected = math.sqrt(2 / CUTOFF) * torch.sin(n * math.pi * x[:, None]) / d[:, None] * u[:, None]
    assert torch.allclose(layer(d), expected, rtol=1e-13, atol=1e-15)
    assert isinstance(layer.bessel.frequencies, torch.nn.Parameter)  # trainable, as in DimeNet
