import pytest
import torch

from geognn.graph import lattice_offsets, periodic_radius_graph, radius_graph
from geognn.nn import EGNNLayer
from geognn.testing import assert_equivariant

F, FV = 8, 3
KINDS_IN = ["node:scalar", "node:position", "edge:index", "node:vector", "edge:scalar", "edge:scalar", "edge:vector"]
KINDS_OUT = ["node:scalar", "node:position", "node:vector"]


def cluster(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = 2.0 * torch.randn(n, 3, dtype=torch.float64, generator=g)
    h = torch.randn(n, F, dtype=torch.float64, generator=g)
    v = torch.randn(n, FV, 3, dtype=torch.float64, generator=g)
    return h, pos, v, g


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"attention": True, "normalize": False},
        {"update_coords": False, "residual": False, "activation": "tanh"},
    ],
)
def test_layer_is_equivariant(options):
    torch.manual_seed(0)
    h, pos, v, g = cluster()
    edge_index = radius_graph(pos, 3.5)
    edge_attr = torch.randn(edge_index.shape[1], 4, dtype=torch.float64, generator=g)
    layer = EGNNLayer(F, edge_channels=4, vector_channels=FV, **options).double()
    args = [h, pos, edge_index, v, edge_attr, None, None]
    errors = assert_equivariant(layer, args, KINDS_IN, KINDS_OUT)
    assert max(errors.values()) < 1e-10


def test_layer_is_equivariant_with_periodic_offsets_and_several_structures():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    pos = 3.0 * torch.rand(8, 3, dtype=torch.float64, generator=g)
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    cell = torch.stack([torch.eye(3, dtype=torch.float64) * 3.0, torch.eye(3, dtype=torch.float64) * 3.5])
    cell[1, 0, 1] = 0.7
    edge_index, shift = periodic_radius_graph(pos, 2.5, cell, torch.ones(2, 3, dtype=torch.bool), batch)
    assert bool(shift.abs().sum(-1).gt(0).any()), "the case must exercise periodic images"
    offset = lattice_offsets(edge_index, shift, cell, batch)
    weight = torch.rand(edge_index.shape[1], dtype=torch.float64, generator=g)
    h = torch.randn(8, F, dtype=torch.float64, generator=g)
    layer = EGNNLayer(F).double()
    # Offsets are lattice vectors: they rotate with the structure and ignore translations.
    errors = assert_equivariant(
        layer,
        [h, pos, edge_index, None, None, weight, offset],
        KINDS_IN,
        KINDS_OUT,
        batch=batch,
    )
    assert max(errors.values()) < 1e-10


def test_messages_are_weighted_and_summed_over_receivers():
    """With zero edge weights nothing flows: h gets only its self update, positions stay."""
    torch.manual_seed(0)
    h, pos, v, _ = cluster()
    edge_index = radius_graph(pos, 3.5)
    layer = EGNNLayer(F, vector_channels=FV).double()
    zero = torch.zeros(edge_index.shape[1], dtype=torch.float64)
    h_cut, pos_cut, v_cut = layer(h, pos, edge_index, v, edge_weight=zero)
    h_none, pos_none, v_none = layer(h, pos, edge_index[:, :0], v)
    assert torch.allclose(h_cut, h_none) and torch.allclose(v_cut, v_none)
    assert torch.equal(pos_cut, pos)
    h_all, pos_all, _ = layer(h, pos, edge_index, v)
    assert not torch.allclose(pos_all, pos) and not torch.allclose(h_all, h_cut)


def test_avg_num_neighbors_divides_the_aggregated_messages():
    torch.manual_seed(0)
    h, pos, _, _ = cluster()
    edge_index = radius_graph(pos, 3.5)
    plain = EGNNLayer(F, residual=False).double()
    scaled = EGNNLayer(F, residual=False, avg_num_neighbors=4.0).double()
    scaled.load_state_dict(plain.state_dict() | {"avg_num_neighbors": scaled.avg_num_neighbors})
    _, pos_plain, _ = plain(h, pos, edge_index)
    _, pos_scaled, _ = scaled(h, pos, edge_index)
    assert torch.allclose(pos_scaled - pos, (pos_plain - pos) / 4.0)


def test_shape_errors_name_the_argument():
    h, pos, v, _ = cluster()
    edge_index = radius_graph(pos, 3.5)
    layer = EGNNLayer(F, vector_channels=FV, edge_channels=2).double()
    with pytest.raises(ValueError, match="v must be"):
        layer(h, pos, edge_index, None, torch.zeros(edge_index.shape[1], 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="edge_attr must be"):
        layer(h, pos, edge_index, v)
    with pytest.raises(ValueError, match="h must be"):
        layer(h[:, :3], pos, edge_index, v)
    with pytest.raises(ValueError, match="unknown activation"):
        EGNNLayer(F, activation="swishy")


def test_repr_and_reset():
    layer = EGNNLayer(F, vector_channels=FV, attention=True)
    assert "vector_channels=3" in repr(layer) and "attention=True" in repr(layer)
    before = [p.clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_one_step_equals_the_paper_equations_written_out_per_edge():
    """EGNN eqs. 3-6 (with geognn's envelope weight w_ij, normalisation c = 1 and n̄), evaluated edge
    by edge in plain Python on a 4-atom graph with the layer's own weights. Pins what symmetry
    tests cannot: that m_ij is built from (h_i, h_j, |x_ij|²) in that order, that the residual
    is added once, that the update divides x_ij by |x_ij| + c, and that sums are divided by n̄."""
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(5)
    n, n_bar = 4, 1.75  # exactly representable: the layer keeps n̄ in a buffer made in float32
    h = torch.randn(n, F, dtype=torch.float64, generator=g)
    pos = torch.randn(n, 3, dtype=torch.float64, generator=g)
    v = torch.randn(n, FV, 3, dtype=torch.float64, generator=g)
    edge_index = torch.tensor([[1, 2, 0, 3, 0], [0, 0, 1, 1, 3]])  # (j, i): not symmetric on purpose
    edge_attr = torch.randn(5, 2, dtype=torch.float64, generator=g)
    weight = torch.rand(5, dtype=torch.float64, generator=g)
    layer = EGNNLayer(F, edge_channels=2, vector_channels=FV, avg_num_neighbors=n_bar).double()
    torch.nn.init.normal_(layer.coord_mlp[-1].weight)  # a visible position update
    h_out, pos_out, v_out = layer(h, pos, edge_index, v, edge_attr, weight)

    silu = torch.nn.functional.silu

    def mlp(seq, x, last=False):
        linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
        for k, lin in enumerate(linears):
            x = lin.weight @ x + lin.bias if lin.bias is not None else lin.weight @ x
            if k < len(linears) - 1 or last:
                x = silu(x)
        return x

    m_sum = [torch.zeros(F, dtype=torch.float64) for _ in range(n)]
    x_sum = [torch.zeros(3, dtype=torch.float64) for _ in range(n)]
    v_sum = [torch.zeros(FV, 3, dtype=torch.float64) for _ in range(n)]
    for e in range(edge_index.shape[1]):
        j, i = int(edge_index[0, e]), int(edge_index[1, e])
        x_ij = pos[i] - pos[j]
        d2 = (x_ij * x_ij).sum()
        m_ij = mlp(layer.edge_mlp, torch.cat([h[i], h[j], d2.view(1), edge_attr[e]]), last=True)  # eq. 3
        unit = x_ij / (d2.sqrt() + 1.0)
        m_sum[i] = m_sum[i] + weight[e] * m_ij
        x_sum[i] = x_sum[i] + weight[e] * unit * mlp(layer.coord_mlp, m_ij)  # eq. 4
        v_sum[i] = v_sum[i] + weight[e] * unit.view(1, 3) * mlp(layer.vector_edge, m_ij).view(FV, 1)
    for i in range(n):
        m_i = m_sum[i] / n_bar  # eq. 5
        expected_h = h[i] + mlp(layer.node_mlp, torch.cat([h[i], m_i, (v[i] ** 2).sum(-1)]))  # eq. 6
        expected_x = pos[i] + x_sum[i] / n_bar
        gated = v[i] * (layer.vector_gate.weight @ h[i] + layer.vector_gate.bias).view(FV, 1) + v_sum[i] / n_bar
        expected_v = layer.vector_mix.weight @ gated
        torch.testing.assert_close(h_out[i], expected_h, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pos_out[i], expected_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v_out[i], expected_v, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(pos_out, pos)


def test_edge_mlp_starts_variance_preserving():
    """φ_e's weights start at std gain/√fan_in (zero biases), so messages keep unit scale: with
    unit-variance inputs the messages' second moment stays of order one (torch's default init
    shrank it about tenfold, and EGNN's first epochs then ignored the geometry)."""
    from geognn.nn.mlp import second_moment_gain

    torch.manual_seed(0)
    layer = EGNNLayer(64)
    linears = [m for m in layer.edge_mlp if isinstance(m, torch.nn.Linear)]
    for linear in linears:
        expected = second_moment_gain("silu") / linear.in_features ** 0.5
        assert abs(float(linear.weight.std()) - expected) < 0.05 * expected
        assert not bool(linear.bias.any())
    x = torch.randn(20000, linears[0].in_features)
    message = layer.edge_mlp(x)
    assert 0.5 < float(message.pow(2).mean()) < 2.0
