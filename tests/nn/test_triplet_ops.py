"""The fused triplet sums of `geognn.nn.triplet_ops` against plain gathers and index_add.

Patterns come from real triplets (`radius_graph` + `triplets`, rows = idx_ji,
cols = idx_kj) and from a hand-made pattern with R != E, repeated (row, col)
pairs and empty rows and columns. References follow the formulas of the
module docstring; derivatives are checked against the references' autograd,
with `gradcheck` / `gradgradcheck`, and through DimeNet++'s interaction block.
"""

from __future__ import annotations

import pytest
import torch

import geognn.nn.triplet_ops as triplet_ops
from geognn.graph import radius_graph, triplets
from geognn.nn.dimenet import DimeNetInteraction, DimeNetPPInteraction
from geognn.nn.triplet_ops import outer, sddmm, spmm, spmm_t, triplet_pattern

DTYPE = torch.float64
CHANNELS, RANK = 4, 3  # C, B


# --------------------------------------------------------------------------- references


def ref_spmm(s, x, W, row, col, num_rows):
    return x.new_zeros(num_rows, x.shape[1]).index_add(0, row, (s @ W.T) * x[col])


def ref_spmm_t(s, a, W, row, col, num_cols):
    return a.new_zeros(num_cols, a.shape[1]).index_add(0, col, (s @ W.T) * a[row])


def ref_sddmm(a, x, W, row, col):
    return (a[row] * x[col]) @ W


def ref_outer(s, a, x, row, col):
    return (a[row] * x[col]).T @ s


# op, reference, and the shapes of its three inputs in terms of (T, R, E)
OPS = {
    "spmm": (spmm, lambda s, x, W, p: ref_spmm(s, x, W, p.row, p.col, p.num_rows), ("T", "E", "W")),
    "spmm_t": (spmm_t, lambda s, a, W, p: ref_spmm_t(s, a, W, p.row, p.col, p.num_cols), ("T", "R", "W")),
    "sddmm": (sddmm, lambda a, x, W, p: ref_sddmm(a, x, W, p.row, p.col), ("R", "E", "W")),
    "outer": (outer, lambda s, a, x, p: ref_outer(s, a, x, p.row, p.col), ("T", "R", "E")),
}


def make_inputs(kind_shapes, pattern, generator, dtype=DTYPE, requires_grad=True):
    rows = {"T": pattern.row.numel(), "R": pattern.num_rows, "E": pattern.num_cols}
    inputs = []
    for kind in kind_shapes:
        shape = (CHANNELS, RANK) if kind == "W" else (rows[kind], RANK if kind == "T" else CHANNELS)
        inputs.append(torch.randn(shape, dtype=dtype, generator=generator).requires_grad_(requires_grad))
    return inputs


# --------------------------------------------------------------------------- patterns


def molecule_pattern(seed: int = 0):
    """Triplets of a random cluster of 5 atoms between two isolated pairs (edges without triplets)."""
    generator = torch.Generator().manual_seed(seed)
    cluster = 2.0 * torch.rand(5, 3, dtype=DTYPE, generator=generator)
    pair = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)
    pos = torch.cat([pair - 20.0, cluster, pair + 20.0])
    edge_index = radius_graph(pos, 1.8)
    num_edges = edge_index.shape[1]
    idx_kj, idx_ji = triplets(edge_index, pos.shape[0])
    return triplet_pattern(idx_ji, idx_kj, num_edges, num_edges), idx_kj, idx_ji


def handmade_pattern():
    """R = 6 rows, E = 8 cols, unequal; rows 0, 3 and 5 and cols 0, 4 and 7 empty; (2, 6) twice."""
    row = torch.tensor([1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4])
    col = torch.tensor([3, 1, 6, 6, 2, 6, 5, 1, 3, 2, 5])
    return triplet_pattern(row, col, 6, 8)


def all_patterns():
    pattern, _, _ = molecule_pattern()
    return {"molecule": pattern, "handmade": handmade_pattern()}


def test_patterns_cover_the_awkward_cases():
    pattern, idx_kj, idx_ji = molecule_pattern()
    E, T = pattern.num_rows, pattern.row.numel()
    assert 10 <= E <= 30 and T > 0
    assert torch.equal(pattern.row, idx_ji) and torch.equal(pattern.col, idx_kj)
    rows_used = torch.bincount(pattern.row, minlength=E)
    cols_used = torch.bincount(pattern.col, minlength=E)
    # the isolated pairs give edges without triplets at both ends of the edge list
    assert rows_used[0] == 0 and rows_used[-1] == 0 and cols_used[0] == 0 and cols_used[-1] == 0


# --------------------------------------------------------------------------- values and derivatives


def compare_with_reference(name, pattern, generator, rtol=1e-12):
    """Forward, first and second derivatives of ``name`` equal those of its reference."""
    op, reference, shapes = OPS[name]
    inputs = make_inputs(shapes, pattern, generator)
    out = op(*inputs, pattern)
    expected = reference(*inputs, pattern)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=rtol, atol=rtol)

    cotangent = torch.randn(out.shape, dtype=out.dtype, generator=generator)
    probes = [torch.randn(x.shape, dtype=x.dtype, generator=generator) for x in inputs]

    def derivatives(result):
        first = torch.autograd.grad((result * cotangent).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum((g * p).sum() for g, p in zip(first, probes)), inputs, allow_unused=True)
        return first, second

    (first, second), (first_ref, second_ref) = derivatives(out), derivatives(expected)
    for got, want in zip(first, first_ref):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol)
    for got, want in zip(second, second_ref):
        want = torch.zeros_like(got) if want is None else want  # the references leave unused inputs at None
        got = torch.zeros_like(want) if got is None else got
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("pattern_name", ["molecule", "handmade"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_and_its_derivatives_match_plain_gathers(name, pattern_name):
    compare_with_reference(name, all_patterns()[pattern_name], torch.Generator().manual_seed(1))


@pytest.mark.parametrize("pattern_name", ["molecule", "handmade"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck_and_gradgradcheck(name, pattern_name):
    pattern = all_patterns()[pattern_name]
    op, _, shapes = OPS[name]
    inputs = make_inputs(shapes, pattern, torch.Generator().manual_seed(2))

    def function(*args):
        return op(*args, pattern)

    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(OPS))
def test_gradient_of_one_input_alone(name, which):
    # Only input `which` requires grad: the backward's per-input branches must not be mixed up.
    pattern = handmade_pattern()
    op, reference, shapes = OPS[name]
    generator = torch.Generator().manual_seed(3)
    inputs = make_inputs(shapes, pattern, generator, requires_grad=False)
    inputs[which].requires_grad_(True)
    out = op(*inputs, pattern)
    cotangent = torch.randn(out.shape, dtype=DTYPE, generator=generator)
    (got,) = torch.autograd.grad((out * cotangent).sum(), inputs[which])
    (want,) = torch.autograd.grad((reference(*inputs, pattern) * cotangent).sum(), inputs[which])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradient_with_an_expanded_cotangent():
    # out.sum().backward() hands the backward a stride-0 gradient.
    pattern = all_patterns()["molecule"]
    for name, (op, reference, shapes) in OPS.items():
        inputs = make_inputs(shapes, pattern, torch.Generator().manual_seed(4))
        got = torch.autograd.grad(op(*inputs, pattern).sum(), inputs)
        want = torch.autograd.grad(reference(*inputs, pattern).sum(), inputs)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("chunk", [5, 7])
@pytest.mark.parametrize("name", sorted(OPS))
def test_chunked_sums_match_plain_gathers(name, chunk, monkeypatch):
    monkeypatch.setattr(triplet_ops, "_CHUNK", chunk)
    patterns = all_patterns()
    for pattern in patterns.values():
        T = pattern.row.numel()
        assert T > chunk and T % chunk != 0, "choose a chunk that splits the triplets unevenly"
        compare_with_reference(name, pattern, torch.Generator().manual_seed(5))


# --------------------------------------------------------------------------- edge cases


def two_atoms(separation: float):
    pos = torch.tensor([[0.0, 0.0, 0.0], [separation, 0.0, 0.0]], dtype=DTYPE)
    edge_index = radius_graph(pos, 1.8)
    idx_kj, idx_ji = triplets(edge_index, 2)
    num_edges = edge_index.shape[1]
    return triplet_pattern(idx_ji, idx_kj, num_edges, num_edges)


@pytest.mark.parametrize("separation, num_edges", [(1.0, 2), (5.0, 0)])
@pytest.mark.parametrize("name", sorted(OPS))
def test_no_triplets_give_zeros_and_zero_gradients(name, separation, num_edges):
    pattern = two_atoms(separation)
    assert pattern.num_rows == num_edges and pattern.row.numel() == 0
    op, reference, shapes = OPS[name]
    inputs = make_inputs(shapes, pattern, torch.Generator().manual_seed(6))
    out = op(*inputs, pattern)
    expected_shape = reference(*inputs, pattern).shape
    assert out.shape == expected_shape
    assert torch.equal(out, torch.zeros(expected_shape, dtype=DTYPE))
    grads = torch.autograd.grad((out * 2.0).sum() + sum(x.sum() for x in inputs), inputs, create_graph=True)
    for g, x in zip(grads, inputs):
        assert torch.equal(g, torch.ones_like(x))  # only the explicit sum contributes
    first = torch.autograd.grad(out.sum(), inputs, create_graph=True, allow_unused=True)
    for g, x in zip(first, inputs):
        assert g is None or (g.shape == x.shape and torch.equal(g, torch.zeros_like(x)))


def test_unsorted_rows_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        triplet_pattern(torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2]), 3, 3)


@pytest.mark.parametrize("name", sorted(OPS))
def test_float32_matches_the_float64_reference(name):
    pattern = all_patterns()["molecule"]
    op, reference, shapes = OPS[name]
    generator = torch.Generator().manual_seed(7)
    inputs64 = make_inputs(shapes, pattern, generator)
    inputs32 = [x.detach().float().requires_grad_(True) for x in inputs64]
    out = op(*inputs32, pattern)
    expected = reference(*inputs64, pattern)
    assert out.dtype == torch.float32
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * scale)
    cotangent = torch.randn(out.shape, dtype=DTYPE, generator=generator)
    got = torch.autograd.grad((out * cotangent.float()).sum(), inputs32)
    want = torch.autograd.grad((expected * cotangent).sum(), inputs64)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5 * float(w.abs().max()))


# --------------------------------------------------------------------------- DimeNet++ block


BLOCKS = {  # both interaction blocks, at sizes where every dimension differs; the shape of their triplet sums
    "dimenet++": (DimeNetPPInteraction, dict(hidden_channels=16, int_emb_size=8, basis_emb_size=4,
                                            num_spherical=3, num_radial=4), (8,)),
    "dimenet": (DimeNetInteraction, dict(hidden_channels=16, num_bilinear=5, num_spherical=3, num_radial=4), (5, 16)),
}


def dimenet_blocks(kind="dimenet++"):
    torch.manual_seed(8)
    block, kwargs, _ = BLOCKS[kind]
    fused = block(**kwargs, fused=True).double()
    plain = block(**kwargs, fused=False).double()
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def dimenet_inputs(pattern, generator):
    E, T = pattern.num_rows, pattern.row.numel()
    m = torch.randn(E, 16, dtype=DTYPE, generator=generator, requires_grad=True)
    rbf = torch.randn(E, 4, dtype=DTYPE, generator=generator, requires_grad=True)
    sbf = torch.randn(T, 12, dtype=DTYPE, generator=generator, requires_grad=True)
    return m, rbf, sbf


@pytest.mark.parametrize("kind", sorted(BLOCKS))
@pytest.mark.parametrize("with_triplets", [True, False])
def test_fused_dimenet_block_equals_message_passing_to_second_order(with_triplets, kind):
    if with_triplets:
        pattern, idx_kj, idx_ji = molecule_pattern()
    else:
        pattern = two_atoms(1.0)
        idx_kj, idx_ji = pattern.col, pattern.row
    fused, plain = dimenet_blocks(kind)
    generator = torch.Generator().manual_seed(9)
    m, rbf, sbf = dimenet_inputs(pattern, generator)
    weight = torch.randn(pattern.num_rows, 16, dtype=DTYPE, generator=generator)

    def run(block, given_pattern):
        block.zero_grad()
        inputs = (m, rbf, sbf)
        out = block(m, rbf, sbf, idx_kj, idx_ji, given_pattern)
        # a force-like first derivative, then a loss on it: parameters get second derivatives
        first = torch.autograd.grad((out * weight).sum(), inputs, create_graph=True)
        loss = sum((g**2).sum() for g in first) + (out**2).sum()
        second = torch.autograd.grad(loss, inputs + tuple(block.parameters()))
        return out.detach(), [g.detach() for g in first], second

    out_plain, first_plain, second_plain = run(plain, None)
    for given in (None, pattern):
        out, first, second = run(fused, given)
        torch.testing.assert_close(out, out_plain, rtol=1e-12, atol=1e-12)
        for got, want in zip(first, first_plain):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for got, want in zip(second, second_plain):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if with_triplets:
        # the triplet sum matters: dropping it changes the output
        assert not torch.allclose(out_plain, plain.update(torch.zeros(m.shape[0], *BLOCKS[kind][2], dtype=DTYPE), m))
