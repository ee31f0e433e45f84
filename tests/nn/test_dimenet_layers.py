"""DimeNet / DimeNet++ blocks against the papers' equations, computed by hand with loops over atoms.

Symmetry tests pass for a block that wires the wrong edges (m_ji instead of
m_kj, the angle at the wrong atom, d_ji instead of d_kj in the spherical
basis). These tests rebuild one step of each block from the equations of
Gasteiger et al. (ICLR 2020, eqs. 3-5 and Fig. 4; DimeNet++ Fig. 1) with plain
loops over atoms k, j, i and angles from arccos of the coordinates, so they
share no indexing, triplet or angle code with the blocks.

The block tests hand each block a basis built in the test, so they cannot see
what the *model* feeds its blocks; `test_model_feeds_...` runs the models
and checks the spherical basis of every triplet against a_SBF(d_kj, α_kji)
evaluated here from scipy's spherical Bessel functions and Legendre
polynomials (not the module's code), then the first interaction step by hand.
"""

import math

import numpy as np
import pytest
import scipy.special as special
import torch
from ase.build import molecule
from scipy.optimize import brentq
from torch.nn.functional import silu

from geognn.data import atoms_to_data
from geognn.graph import triplets
from geognn.models import build_model
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


def dimenetpp_step_by_hand(block, m, rbf, triplets_of_edges):
    """DimeNet++ Fig. 1, per edge ji, then the update:

    σ(W_up Σ_k σ(W_down (σ(W_kj m_kj + b) ⊙ W_rbf e_RBF(d_kj))) ⊙ W_sbf a_SBF(d_kj, α_kji))
    """
    expected = []
    for e, items in enumerate(triplets_of_edges):
        aggregated = 0.0
        for kj, sbf in items:
            x = silu(lin(block.lin_kj, m[kj])) * lin(block.lin_rbf2, lin(block.lin_rbf1, rbf[kj]))
            x = silu(lin(block.lin_down, x))
            aggregated = aggregated + x * lin(block.lin_sbf2, lin(block.lin_sbf1, sbf))
        expected.append(update(block, m[e], silu(lin(block.lin_up, aggregated))))
    return torch.stack(expected)


def dimenet_step_by_hand(block, m, rbf, triplets_of_edges):
    """DimeNet eq. 4-5, per edge ji, then the update:

    Σ_k Σ_{b, f} W[out, b, f] (W_sbf a_SBF(d_kj, α_kji))_b (σ(W_kj m_kj + b) ⊙ W_rbf e_RBF(d_kj))_f
    """
    width, num_bilinear = m.shape[1], block.num_bilinear
    expected = []
    for e, items in enumerate(triplets_of_edges):
        aggregated = torch.zeros(width, dtype=torch.float64)
        for kj, sbf in items:
            x = silu(lin(block.lin_kj, m[kj])) * lin(block.lin_rbf, rbf[kj])
            basis = lin(block.lin_sbf, sbf)  # [num_bilinear]
            for out in range(width):
                aggregated[out] += sum(block.W[out, b, f] * basis[b] * x[f]
                                       for b in range(num_bilinear) for f in range(width))
        expected.append(update(block, m[e], aggregated))
    return torch.stack(expected)


@pytest.mark.parametrize("fused", [True, False])
def test_dimenetpp_interaction_is_the_papers_step(fused):
    g = setup()
    block = randomize(DimeNetPPInteraction(F, 5, 3, S, R, fused=fused).double())
    m = torch.randn(len(g["edges"]), F, dtype=torch.float64)
    got = block(m, g["rbf"], g["sbf"], g["idx_kj"], g["idx_ji"])

    expected = dimenetpp_step_by_hand(block, m, g["rbf"], by_hand_triplets(g))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_dimenet_interaction_is_the_papers_bilinear_step(fused):
    g = setup(1)
    block = randomize(DimeNetInteraction(F, 3, S, R, fused=fused).double())
    m = torch.randn(len(g["edges"]), F, dtype=torch.float64)
    got = block(m, g["rbf"], g["sbf"], g["idx_kj"], g["idx_ji"])

    expected = dimenet_step_by_hand(block, m, g["rbf"], by_hand_triplets(g))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


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


# --------------------------------------------------------------------------- the model's wiring


def envelope(x, p):
    """DimeNet eq. 8, u(x) for x = d/c < 1, else 0."""
    u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return u if x < 1 else 0.0


def spherical_bessel_roots_scipy(num_spherical, num_radial):
    """z_ln, the n-th positive root of j_l: brentq between consecutive roots of j_{l-1} (they interlace)."""
    roots = math.pi * np.arange(1, num_radial + num_spherical)  # j_0 = sin(x)/x
    table = [roots[:num_radial]]
    for l in range(1, num_spherical):
        roots = np.array([brentq(lambda x: special.spherical_jn(l, x), a, b, xtol=1e-15, rtol=1e-15)
                          for a, b in zip(roots[:-1], roots[1:])])
        table.append(roots[:num_radial])
    return np.stack(table)


def a_sbf_by_hand(d_kj, cos_alpha, cutoff, envelope_exponent, roots):
    """DimeNet a_SBF,ln(d_kj, α) with the reference code's extra 1/(d/c), flattened l-major, as a float64 tensor.

    sqrt(2/c³) / |j_{l+1}(z_ln)| · j_l(z_ln d/c) · u(d/c) / (d/c) · sqrt((2l+1)/4π) P_l(cos α)
    """
    x = d_kj / cutoff
    num_spherical, num_radial = roots.shape
    values = np.zeros((num_spherical, num_radial))
    for l in range(num_spherical):
        zonal = math.sqrt((2 * l + 1) / (4 * math.pi)) * special.eval_legendre(l, cos_alpha)
        for n in range(num_radial):
            normalizer = math.sqrt(2 / cutoff**3) / abs(special.spherical_jn(l + 1, roots[l, n]))
            radial = normalizer * special.spherical_jn(l, roots[l, n] * x) * envelope(x, envelope_exponent + 1) / x
            values[l, n] = radial * zonal
    return torch.from_numpy(values.flatten())


MODEL_CUTOFF = 3.0  # above NH3's H-H distances (~1.6 Å): all 12 directed edges and 24 triplets
MODELS_SMALL = {
    "dimenet": dict(num_bilinear=3),
    "dimenet++": dict(int_emb_size=5, basis_emb_size=3, out_emb_channels=7),
}


@pytest.mark.parametrize("name", MODELS_SMALL)
def test_model_feeds_its_interaction_the_basis_of_d_kj_and_the_angle_at_j(name):
    """DimeNet eq. 3-5 on NH3 from the positions: what the model hands its first interaction block, and its step.

    The spherical basis of triplet k -> j -> i is a_SBF(d_kj, α_kji) (d_kj != d_ji
    here: k, j, i = H, H, N gives 1.6 Å against 1.0 Å), and the block's
    output is one interaction step computed by hand from those by-hand bases.
    """
    num_spherical, num_radial, envelope_exponent = 4, 3, 5
    model = build_model(name, hidden_channels=F, num_blocks=1, num_spherical=num_spherical, num_radial=num_radial,
                        envelope_exponent=envelope_exponent, cutoff=MODEL_CUTOFF, **MODELS_SMALL[name]).double()
    torch.manual_seed(3)
    block = randomize(model.interaction_blocks[0])
    captured = {}
    model.emb.register_forward_pre_hook(lambda module, args: captured.update(edge_index=args[2]))
    block.register_forward_pre_hook(lambda module, args: captured.update(inputs=args))
    block.register_forward_hook(lambda module, args, out: captured.update(output=out))
    atoms = molecule("NH3")
    atoms.rattle(0.1, seed=3)
    model(atoms_to_data(atoms, dtype=torch.float64))
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    m, rbf, sbf, idx_kj, idx_ji = captured["inputs"][:5]
    edges = [tuple(edge) for edge in captured["edge_index"].T.tolist()]  # (sender, receiver)
    assert sorted(edges) == [(j, i) for j in range(4) for i in range(4) if j != i]

    # e_RBF(d) per edge, eq. 7, with the model's (trainable) frequencies
    frequencies = model.rbf.bessel.frequencies.detach()
    for e, (j, i) in enumerate(edges):
        d = float((pos[j] - pos[i]).norm())
        expected = math.sqrt(2 / MODEL_CUTOFF) * torch.sin(frequencies * d / MODEL_CUTOFF) / d
        expected = expected * envelope(d / MODEL_CUTOFF, envelope_exponent + 1)
        assert torch.allclose(rbf[e], expected, rtol=1e-12, atol=1e-14)

    roots = spherical_bessel_roots_scipy(num_spherical, num_radial)
    row_of = {(int(kj), int(ji)): t for t, (kj, ji) in enumerate(zip(idx_kj, idx_ji))}
    triplets_of_edges = []
    for ji, (j, i) in enumerate(edges):
        items = []
        for kj, (k, receiver) in enumerate(edges):
            if receiver != j or k == i:
                continue
            a, b = pos[k] - pos[j], pos[i] - pos[j]
            cos_alpha = float(torch.dot(a, b) / (a.norm() * b.norm()))  # α_kji, at atom j
            expected = a_sbf_by_hand(float(a.norm()), cos_alpha, MODEL_CUTOFF, envelope_exponent, roots)
            assert (kj, ji) in row_of, f"triplet {k}->{j}->{i} missing"
            got = sbf[row_of[(kj, ji)]]
            assert torch.allclose(got, expected, rtol=1e-11, atol=1e-13), f"a_SBF of {k}->{j}->{i}"
            items.append((kj, expected))
        triplets_of_edges.append(items)
    assert sum(map(len, triplets_of_edges)) == len(row_of) == idx_kj.shape[0] == 24

    step_by_hand = dimenet_step_by_hand if name == "dimenet" else dimenetpp_step_by_hand
    expected = step_by_hand(block, m, rbf, triplets_of_edges)
    assert torch.allclose(captured["output"], expected, rtol=1e-12, atol=1e-12)
