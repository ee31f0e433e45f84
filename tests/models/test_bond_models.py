"""The 2D baselines on bond graphs: the model checks that apply to them, and one step of each
against its paper's equations written out by hand on formaldehyde (O=C, C-H, C-H)."""

import pytest
import torch
from ase.build import molecule
from torch.nn.functional import leaky_relu, one_hot, relu

from geognn.data import atoms_to_data, keys
from geognn.models import GAT, GCN, GIN, GPS, MODELS, MPNN, GraphSAGE, build_model
from geognn.testing import CHECK_REQUIREMENTS, ModelTestMixin, missing_requirements, molecules, to_batch

SMALL = {"hidden_channels": 8, "num_layers": 2}


class TestGCN(ModelTestMixin):
    model_name = "gcn"
    model_kwargs = SMALL


class TestGraphSAGE(ModelTestMixin):
    model_name = "sage"
    model_kwargs = SMALL


class TestGAT(ModelTestMixin):
    model_name = "gat"
    model_kwargs = {**SMALL, "heads": 2}


class TestGIN(ModelTestMixin):
    model_name = "gin"
    model_kwargs = SMALL


class TestGINElementOnly(ModelTestMixin):
    model_name = "gin"
    model_kwargs = {**SMALL, "atom_features": False}


class TestMPNN(ModelTestMixin):
    model_name = "mpnn"
    model_kwargs = {"hidden_channels": 8, "num_layers": 2, "edge_hidden": 16}


class TestGPS(ModelTestMixin):
    model_name = "gps"
    model_kwargs = {**SMALL, "heads": 2, "walk_length": 5}


def test_registered():
    for name, cls in {"gcn": GCN, "sage": GraphSAGE, "gat": GAT, "gin": GIN, "mpnn": MPNN, "gps": GPS}.items():
        assert MODELS[name] is cls
        assert not cls.uses_positions and cls.graph_builder == "bonds"


def test_mixin_says_which_checks_apply():
    """Every mixin test is in CHECK_REQUIREMENTS; a 2D model gets the refusal test instead of the
    force checks, the 3D models the force checks and not the refusal, global readouts no additivity."""
    tests = {name for name in dir(ModelTestMixin) if name.startswith("test_")}
    assert tests == set(CHECK_REQUIREMENTS)
    gin, mpnn, egnn = (missing_requirements(MODELS[n]) for n in ("gin", "mpnn", "egnn"))
    assert {"test_forces_match_finite_differences", "test_stress_matches_finite_differences",
            "test_smooth_at_cutoff", "test_forces_are_trainable", "test_smooth_at_symmetric_sites"} == set(gin)
    assert "positions" in gin["test_forces_match_finite_differences"]
    assert set(mpnn) == set(gin) | {"test_additive_at_large_separation"}
    assert set(egnn) == {"test_refuses_forces_and_stress"}
    assert "periodic" in missing_requirements(MODELS["egnn"], supports_periodic=False)["test_equivariance_periodic"]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model("gat", hidden_channels=10, heads=4)
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model("gps", hidden_channels=10, heads=4)
    with pytest.raises(ValueError, match="aggr"):
        build_model("mpnn", aggr="max")
    with pytest.raises(ValueError, match="bond_scale"):
        build_model("gin", bond_scale=0.0)


def test_training_refuses_forces_for_2d_models():
    from geognn.training.config import ConfigError, TrainConfig, from_dict
    from geognn.training.trainer import check_model_and_loss

    for weight in ("forces_weight", "stress_weight"):
        config = from_dict(TrainConfig, {"model": {"name": "gin"}, "loss": {weight: 1.0}})
        with pytest.raises(ConfigError, match=f"loss.{weight}: model 'gin' does not use positions"):
            check_model_and_loss(config)
    check_model_and_loss(from_dict(TrainConfig, {"model": {"name": "gin"}}))
    check_model_and_loss(from_dict(TrainConfig, {"model": {"name": "schnet"}, "loss": {"forces_weight": 1.0}}))


def test_calculator_refuses_2d_models():
    from geognn.calculator import GeoGNNCalculator

    with pytest.raises(ValueError, match="positions"):
        GeoGNNCalculator(make("gin"))


# ------------------------------------------------------------------ one step by hand


def formaldehyde():
    """Inputs, the model's graph, and by-hand bond-graph quantities for H2CO (atoms O, C, H, H)."""
    data = atoms_to_data(molecule("H2CO"), dtype=torch.float64)
    z = data[keys.ATOMIC_NUMBERS]
    # Bonds by hand: O=C (order 2), C-H, C-H.
    order = torch.zeros(4, 4, dtype=torch.long)
    for a, b, k in ((0, 1, 2), (1, 2, 1), (1, 3, 1)):
        order[a, b] = order[b, a] = k
    A = (order > 0).double()
    degree = A.sum(1).long()
    hydrogens = (A * (z == 1).double()).sum(1).long()
    valence = order.sum(1).double()
    features = torch.cat([one_hot(degree, 6), one_hot(hydrogens, 6), (valence / 4).unsqueeze(-1)], 1).double()
    return data, z, order, A, features


def model_graph(model, data):
    graph = model.build_graph(data.pos, torch.zeros(4, dtype=torch.long), 1, z=data.z)
    return graph


def h0_by_hand(model, z, features):
    return model.embedding.weight[z] + features @ model.atom_linear.weight.T


def edge_one_hot(order, sender, receiver):
    return one_hot(order[sender, receiver] - 1, 3).double()


def make(name, **options):
    torch.manual_seed(0)
    return build_model(name, hidden_channels=4, num_layers=1, **options).double().eval()


def check_energy(model, data, h1):
    """E = Σ_i MLP(h_i) for the atom-wise readouts."""
    expected = model.readout(h1).squeeze(-1).sum()
    torch.testing.assert_close(model(data)[keys.ENERGY][0], expected, atol=1e-12, rtol=0)


def test_graph_is_the_bond_graph_with_orders():
    data, z, order, A, _ = formaldehyde()
    graph = model_graph(make("gcn"), data)
    j, i = graph.edge_index
    assert A[i, j].all() and len(i) == 6
    assert (graph.edge_attr == order[i, j]).all()


def test_gcn_step_by_hand():
    """Kipf & Welling eq. 2: h' = D̂^-1/2 (A + I) D̂^-1/2 h W + b, then residual h + silu(h')."""
    data, z, order, A, features = formaldehyde()
    model = make("gcn")
    conv = model.convs[0]
    h0 = h0_by_hand(model, z, features)
    A_hat = A + torch.eye(4, dtype=torch.float64)
    d = A_hat.sum(1).rsqrt()
    propagated = d[:, None] * A_hat * d[None, :] @ (h0 @ conv.lin.weight.T) + conv.bias
    check_energy(model, data, h0 + torch.nn.functional.silu(propagated))


def test_sage_step_by_hand():
    """Hamilton et al. with mean aggregation: h' = W_l mean_{j∈N(i)} h_j + b + W_r h_i."""
    data, z, order, A, features = formaldehyde()
    model = make("sage")
    conv = model.convs[0]
    h0 = h0_by_hand(model, z, features)
    mean = (A @ h0) / A.sum(1, keepdim=True)
    out = mean @ conv.lin_l.weight.T + conv.lin_l.bias + h0 @ conv.lin_r.weight.T
    check_energy(model, data, h0 + torch.nn.functional.silu(out))


def test_gin_step_by_hand():
    """Hu et al. (GINE): h' = MLP((1 + eps) h_i + Σ_j relu(h_j + W e_ij + b)), bond order one-hot e_ij."""
    data, z, order, A, features = formaldehyde()
    model = make("gin")
    conv = model.convs[0]
    with torch.no_grad():
        conv.eps.fill_(0.3)
    h0 = h0_by_hand(model, z, features)
    aggregated = torch.zeros_like(h0)
    for i in range(4):
        for j in range(4):
            if A[i, j]:
                aggregated[i] += relu(h0[j] + conv.lin(edge_one_hot(order, j, i)))
    out = conv.nn(1.3 * h0 + aggregated)
    check_energy(model, data, h0 + torch.nn.functional.silu(out))


def test_gatv2_step_by_hand():
    """Brody et al. eq. 7 with edge features: per head, e_ij = aᵀ LeakyReLU(W_s h_j + W_t h_i + W_e e_ij),
    softmax over j ∈ N(i) ∪ {i} (the self loop's edge feature is the mean of i's incoming ones),
    h'_i = Σ_j α_ij W_s h_j, heads concatenated, plus bias."""
    data, z, order, A, features = formaldehyde()
    model = make("gat", heads=2)
    conv = model.convs[0]
    h0 = h0_by_hand(model, z, features)
    source = (h0 @ conv.lin_l.weight.T + conv.lin_l.bias).view(4, 2, 2)
    target = (h0 @ conv.lin_r.weight.T + conv.lin_r.bias).view(4, 2, 2)
    out = torch.zeros(4, 2, 2, dtype=torch.float64)
    for i in range(4):
        neighbours = [j for j in range(4) if A[i, j]]
        edge_features = {j: edge_one_hot(order, j, i) for j in neighbours}
        edge_features[i] = torch.stack(list(edge_features.values())).mean(0)
        senders = neighbours + [i]
        scores = torch.stack([
            (leaky_relu(source[j] + target[i] + (edge_features[j] @ conv.lin_edge.weight.T).view(2, 2), 0.2)
             * conv.att[0]).sum(-1)
            for j in senders
        ])  # [len(senders), heads]
        alpha = scores.softmax(0)
        out[i] = sum(alpha[k].unsqueeze(-1) * source[j] for k, j in enumerate(senders))
    out = out.reshape(4, 4) + conv.bias
    check_energy(model, data, h0 + torch.nn.functional.silu(out))


def _gru(gru, m, h):
    """PyTorch's GRU cell equations (Cho et al. 2014), one step."""
    W_r, W_z, W_n = gru.weight_ih_l0.chunk(3)
    U_r, U_z, U_n = gru.weight_hh_l0.chunk(3)
    b_r, b_z, b_n = gru.bias_ih_l0.chunk(3)
    c_r, c_z, c_n = gru.bias_hh_l0.chunk(3)
    r = torch.sigmoid(m @ W_r.T + b_r + h @ U_r.T + c_r)
    u = torch.sigmoid(m @ W_z.T + b_z + h @ U_z.T + c_z)
    n = torch.tanh(m @ W_n.T + b_n + r * (h @ U_n.T + c_n))
    return (1 - u) * n + u * h


def _set2set(module, x, steps):
    """Vinyals et al.: q_t = LSTM(q*_{t-1}), a = softmax_i(x_i · q_t), r = Σ a_i x_i, q*_t = [q_t, r]."""
    lstm = module.lstm
    F = x.shape[1]
    q_star = x.new_zeros(2 * F)
    h, c = x.new_zeros(F), x.new_zeros(F)
    W_i, W_f, W_g, W_o = lstm.weight_ih_l0.chunk(4)
    U_i, U_f, U_g, U_o = lstm.weight_hh_l0.chunk(4)
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4)
    for _ in range(steps):
        i = torch.sigmoid(W_i @ q_star + U_i @ h + b[0])
        f = torch.sigmoid(W_f @ q_star + U_f @ h + b[1])
        g = torch.tanh(W_g @ q_star + U_g @ h + b[2])
        o = torch.sigmoid(W_o @ q_star + U_o @ h + b[3])
        c = f * c + i * g
        h = o * torch.tanh(c)
        a = (x @ h).softmax(0)
        q_star = torch.cat([h, (a.unsqueeze(-1) * x).sum(0)])
    return q_star


@pytest.mark.parametrize("aggr", ["add", "mean"])
def test_mpnn_step_by_hand(aggr):
    """Gilmer et al.: m_i = Σ_j A(e_ij) h_j (the mean over j for aggr "mean"; edge network on bond
    order and length, plus NNConv's root weight and bias), h_i = GRU(silu(m_i), h_i),
    E = MLP(Set2Set(h)) for the structure. Carbon has three bonds, so "add" and "mean" differ."""
    data, z, order, A, features = formaldehyde()
    model = make("mpnn", edge_hidden=6, set2set_steps=3, aggr=aggr)
    conv = model.message
    h0 = h0_by_hand(model, z, features)
    m = h0 @ conv.lin.weight.T + conv.bias
    messages = torch.zeros_like(m)
    for i in range(4):
        for j in range(4):
            if A[i, j]:
                e = torch.cat([edge_one_hot(order, j, i), (data.pos[j] - data.pos[i]).norm().view(1)])
                messages[i] += h0[j] @ conv.nn(e).view(4, 4)
    if aggr == "mean":
        messages = messages / A.sum(1, keepdim=True)
    # One message-passing step alone, on the model's bond graph, before the GRU and readout.
    graph = model_graph(model, data)
    torch.testing.assert_close(conv(h0, graph.edge_index, model.edge_inputs(graph, h0.dtype)), m + messages,
                               atol=1e-12, rtol=0)
    h1 = _gru(model.gru, torch.nn.functional.silu(m + messages), h0)
    expected = model.readout(_set2set(model.set2set, h1, 3)).squeeze(-1)
    out = model(data)
    torch.testing.assert_close(out[keys.ENERGY][0], expected, atol=1e-12, rtol=0)
    assert keys.NODE_ENERGY not in out


def test_gps_inputs_by_hand():
    """GPS adds W_p RWPE_i to the atom inputs: on formaldehyde's star (C in the centre) a walk from
    a leaf is back after 2 and 4 steps with probability 1/3, C with probability 1, never after odd
    steps; the layer is PyG's GPSConv fed the bond graph with one-hot bond orders."""
    data, z, order, A, features = formaldehyde()
    model = make("gps", heads=2, walk_length=4)
    leaf, centre = [0, 1 / 3, 0, 1 / 3], [0, 1, 0, 1]
    rwpe = torch.tensor([leaf, centre, leaf, leaf], dtype=torch.float64)
    h0 = h0_by_hand(model, z, features) + rwpe @ model.pe_linear.weight.T
    graph = model_graph(model, data)
    edge_features = edge_one_hot(order, graph.edge_index[0], graph.edge_index[1])
    h1 = model.convs[0](h0, graph.edge_index, torch.zeros(4, dtype=torch.long), edge_attr=edge_features)
    check_energy(model, data, h1)


@pytest.mark.parametrize("readout", ["sum", "mean"])
def test_structure_level_output_gets_scale_shift_and_references(readout):
    """E = raw * scale + Σ_i (shift + reference[z_i]) for a Set2Set readout, and the mean over the
    structure's atoms instead of the sum for a "mean" readout (an intensive target). Structures of
    7, 3 and 5 atoms, so a sum and a mean of the per-atom offsets differ in each."""
    structures = [molecules()[k] for k in (0, 1, 2)]  # CH3CHO, H2O, CH4
    model = make("mpnn", readout=readout)
    data = to_batch(structures)
    raw = model(data)[keys.ENERGY].detach()  # identity scale, zero shift and references: the network's output
    scale, shift, reference = 2.0, 0.5, {1: -1.0, 6: -30.0, 8: -70.0}
    with torch.no_grad():
        model.energy_scale.fill_(scale)
        model.energy_shift.fill_(shift)
        for element, value in reference.items():
            model.atomic_reference[element] = value
    expected = []
    for k, atoms in enumerate(structures):
        offsets = [shift + reference[int(element)] for element in atoms.numbers]
        offset = sum(offsets) / (len(offsets) if readout == "mean" else 1)
        expected.append(scale * float(raw[k]) + offset)
    out = model(data)
    torch.testing.assert_close(out[keys.ENERGY], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)
    assert keys.NODE_ENERGY not in out


def test_1wl_hexagon_and_two_triangles():
    """examples/wl_hexagon_vs_triangles.py: 1-WL and the 1-WL-bounded 2D models cannot tell a 6-cycle
    from two triangles (every atom has two neighbours of the same kind); GPS's random-walk encodings
    can (a walk returns after 3 steps only in a triangle); 3D models see the different distances."""
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "wl_hexagon_vs_triangles.py"))
    shapes = [example["hexagon"](), example["two_triangles"]()]
    graphs = [example["bond_graph"](torch.tensor(a.numbers), torch.tensor(a.positions))[0] for a in shapes]
    assert [g.shape[1] for g in graphs] == [12, 12]
    assert example["wl_histogram"](torch.tensor(shapes[0].numbers), graphs[0]) == example["wl_histogram"](
        torch.tensor(shapes[1].numbers), graphs[1])
    for name in ("gcn", "sage", "gat", "gin", "mpnn", "gps", "schnet", "painn"):
        for seed in range(2):
            torch.manual_seed(seed)
            model = build_model(name).double().eval()
            hexagon, triangles = (model(atoms_to_data(a, dtype=torch.float64))[keys.ENERGY].detach() for a in shapes)
            separated = bool((hexagon - triangles).abs() > 1e-8)
            assert separated == (name in ("gps", "schnet", "painn")), name
