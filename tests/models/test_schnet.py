"""SchNet: the model checks, one interaction by hand, and PyG's SchNet with copied weights."""

import math

import pytest
import torch

from geognn.data import keys
from geognn.graph import pyg_radius_graph
from geognn.models import MODELS, SchNet, build_model
from geognn.nn import SchNetInteraction
from geognn.testing import ModelTestMixin, molecules, to_batch

SMALL = {"hidden_channels": 16, "num_filters": 12, "num_interactions": 2, "num_gaussians": 10}


class TestSchNet(ModelTestMixin):
    model_name = "schnet"
    model_kwargs = SMALL


class TestSchNetAveraged(ModelTestMixin):
    model_name = "schnet"
    model_kwargs = {**SMALL, "avg_num_neighbors": 6.0, "cutoff": 4.0}


def test_registered():
    assert MODELS["schnet"] is SchNet


def test_one_interaction_is_schnets_equation_by_hand():
    """v_i = Dense(ssp(Lin_2 Σ_j Lin_1(x_j) ⊙ W(r_ij) C(r_ij))), with W = Dense(ssp(Dense(e(r_ij)))), loops over pairs.

    A layer that filtered x_i instead of x_j, used the receiver's distances,
    dropped the cutoff or the shifted softplus fails.
    """
    torch.manual_seed(0)
    n, cutoff, gaussians = 5, 3.5, 6
    layer = SchNetInteraction(4, 3, gaussians).double()
    for param in layer.parameters():
        torch.nn.init.normal_(param)
    pos = 1.5 * torch.randn(n, 3, dtype=torch.float64)
    x = torch.randn(n, 4, dtype=torch.float64)
    pairs = [(j, i) for i in range(n) for j in range(n) if j != i and (pos[j] - pos[i]).norm() < cutoff]
    edge_index = torch.tensor(pairs).T
    centers = torch.linspace(0, cutoff, gaussians, dtype=torch.float64)

    def ssp(t):
        return torch.log(0.5 * torch.exp(t) + 0.5)  # softplus(t) - log 2

    def dense(linear, t):
        return t @ linear.weight.T + (linear.bias if linear.bias is not None else 0)

    rbf, cut = [], []
    for j, i in pairs:
        d = (pos[j] - pos[i]).norm()
        rbf.append(torch.exp(-0.5 * ((d - centers) / (cutoff / (gaussians - 1))) ** 2))
        cut.append(0.5 * (torch.cos(math.pi * d / cutoff) + 1))
    got = layer(x, edge_index, torch.stack(rbf), torch.stack(cut))

    expected = []
    for i in range(n):
        total = torch.zeros(3, dtype=torch.float64)
        for k, (j, receiver) in enumerate(pairs):
            if receiver == i:
                w = dense(layer.filter[2], ssp(dense(layer.filter[0], rbf[k]))) * cut[k]
                total = total + dense(layer.lin_1, x[j]) * w
        expected.append(dense(layer.lin_3, ssp(dense(layer.lin_2, total))))
    assert torch.allclose(got, torch.stack(expected), atol=1e-12)


def pyg_schnet():
    from torch_geometric.nn.models import SchNet as PyGSchNet

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its Gaussian centres in float64, as ours
    try:
        torch.manual_seed(0)
        model = PyGSchNet(hidden_channels=24, num_filters=20, num_interactions=3, num_gaussians=30, cutoff=5.0)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))  # no bias left at zero
    return model


def test_from_pyg_gives_pyg_energies_and_forces(monkeypatch):
    from torch_geometric.nn.models import schnet as pyg

    # PyG 2.8 routes radius_graph through pyg-lib, which is not on PyPI; geognn's search finds the same pairs.
    monkeypatch.setattr(pyg, "radius_graph", pyg_radius_graph)
    batch = to_batch(molecules())
    theirs = pyg_schnet()
    ours = SchNet.from_pyg(theirs)
    assert ours.config.max_atomic_number == 99 and ours.config.num_filters == 20
    pos = batch.pos.clone().requires_grad_(True)
    energy = theirs(batch.z, pos, batch.batch).squeeze(-1)
    forces = -torch.autograd.grad(energy.sum(), pos)[0]
    energy = energy.detach()
    out = ours(batch, compute_forces=True)
    energy_error = float((out[keys.ENERGY].detach() - energy).abs().max() / energy.abs().max())
    force_error = float((out[keys.FORCES] - forces).abs().max() / forces.abs().max())
    assert energy_error <= 1e-8 and force_error <= 1e-8, (energy_error, force_error)
    assert float(energy.abs().min()) > 1e-3 and float(forces.abs().max()) > 1e-3


def test_from_pyg_refuses_what_it_cannot_copy():
    from torch_geometric.nn.models import SchNet as PyGSchNet

    with pytest.raises(TypeError, match="torch_geometric SchNet"):
        SchNet.from_pyg(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="energy setting"):
        SchNet.from_pyg(PyGSchNet(hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=5, dipole=True))
    with pytest.raises(ValueError, match="sum readout"):
        SchNet.from_pyg(PyGSchNet(hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=5,
                                  readout="mean"))


def test_bad_shapes_are_named():
    layer = SchNetInteraction(4, 3, 6)
    with pytest.raises(ValueError, match=r"expected x \[N, 4\] and edge_rbf \[E, 6\]"):
        layer(torch.zeros(2, 5), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 6), torch.zeros(0))
    assert build_model("schnet").config.num_interactions == 3


def test_equivariant_with_activations_at_torchs_softplus_switch():
    """The readout's pre-activations placed at 20, where torch's softplus switches to its linear
    branch with a jump of 2.1e-9: rotated inputs round to either side, and the model stays
    equivariant to 1e-10 (the flaky failure at 2e-9 had this cause; with torch's threshold
    this test fails at 8e-10 to 1.6e-9 in the energy)."""
    from geognn.testing import assert_equivariant

    torch.manual_seed(0)
    model = build_model("schnet", **SMALL).double().eval()
    data = to_batch(molecules())
    captured = []
    hook = model.readout[0].register_forward_hook(lambda module, args, out: captured.append(out.detach()))
    with torch.no_grad():
        model(data)
    hook.remove()
    pre = captured[0]  # [N, F/2]
    with torch.no_grad():
        # Steep weights, so that the rounding noise of a rotation (1e-15 in the features) moves the
        # pre-activation by more than an ulp of 20 and lands on both sides of it.
        model.readout[0].weight.mul_(1e3)
        for channel in range(pre.shape[1]):
            atom = (5 * channel) % pre.shape[0]
            model.readout[0].bias[channel] = 20.0 - 1e3 * (pre[atom, channel] - model.readout[0].bias[channel])
    assert_equivariant(model, data, call_kwargs={"compute_forces": True}, num_trials=4)  # to 1e-10
