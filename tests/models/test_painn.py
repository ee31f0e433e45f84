"""PaiNN: the model checks; the message and update blocks and two whole layers against the paper's equations by hand."""

import math

import pytest
import torch
from ase.build import molecule

from geognn.data import atoms_to_data
from geognn.models import MODELS, PaiNN
from geognn.nn import PaiNNMessage, PaiNNUpdate
from geognn.testing import ModelTestMixin

SMALL = {"hidden_channels": 8, "num_layers": 2, "num_radial": 6}


class TestPaiNN(ModelTestMixin):
    model_name = "painn"
    model_kwargs = SMALL


class TestPaiNNAveraged(ModelTestMixin):
    model_name = "painn"
    model_kwargs = {**SMALL, "avg_num_neighbors": 5.0, "cutoff": 4.0}


def test_registered():
    assert MODELS["painn"] is PaiNN


def _silu(t):
    return t * torch.sigmoid(t)


def _dense(linear, t):
    return t @ linear.weight.T + (linear.bias if linear.bias is not None else 0)


def _message_by_hand(message, h, v, pos, pairs, radial, cutoff):
    """Eq. 7-8: (Δh_i, Δv_i) = Σ_j (x_s, v_j ⊙ x_vv + x_vs ⊗ r̂_ij), x = φ(h_j) ⊙ (W e(r_ij) + b) f_c."""
    n, F = h.shape
    phi = message.phi
    dh, dv = torch.zeros(n, F, dtype=torch.float64), torch.zeros(n, F, 3, dtype=torch.float64)
    for i in range(n):
        for k, (j, receiver) in enumerate(pairs):
            if receiver != i:
                continue
            x = _dense(phi[2], _silu(_dense(phi[0], h[j]))) * _dense(message.filter, radial[k]) * cutoff[k]
            x_s, x_vv, x_vs = x[:F], x[F:2 * F], x[2 * F:]
            dh[i] = dh[i] + x_s
            for c in range(F):
                dv[i, c] = dv[i, c] + v[j, c] * x_vv[c] + x_vs[c] * (pos[j] - pos[i]) / (pos[j] - pos[i]).norm()
    return dh, dv


def _update_by_hand(update, h, v):
    """Eq. 9-10: (Δh_i, Δv_i) = (a_ss + a_sv ⟨U v_i, V v_i⟩, a_vv ⊙ U v_i), a = MLP([h_i, ‖V v_i‖])."""
    n, F = h.shape
    dh, dv = torch.zeros(n, F, dtype=torch.float64), torch.zeros(n, F, 3, dtype=torch.float64)
    for i in range(n):
        U_v = update.U.weight @ v[i]  # [F, 3]: channel mixing
        V_v = update.V.weight @ v[i]
        square = (V_v**2).sum(-1)
        norm = torch.sqrt(square + 1.0) - 1.0 if update.smooth else torch.sqrt(square + 1e-8)
        a = _dense(update.mlp[2], _silu(_dense(update.mlp[0], torch.cat([h[i], norm]))))
        a_vv, a_sv, a_ss = a[:F], a[F:2 * F], a[2 * F:]
        dh[i], dv[i] = a_ss + a_sv * (U_v * V_v).sum(-1), a_vv.unsqueeze(-1) * U_v
    return dh, dv


@pytest.mark.parametrize("vector_norm", ["smooth", "paper"])
def test_message_and_update_are_painns_equations_by_hand(vector_norm):
    """Eq. 7-10 of Schütt et al. 2021 with loops over pairs and channels; the norm of V v as the
    paper's (with ε = 1e-8) or geognn's smooth sqrt(‖V v‖² + 1) − 1.

    A block that took v_i for v_j, the direction i -> j reversed, swapped the
    three filter parts, left the cutoff off the filter's bias, or used U v for
    V v in the norm fails. The blocks return increments; the residual sums
    are the model's (`test_model_adds_each_blocks_increments_to_h_and_v`).
    """
    torch.manual_seed(0)
    n, F, R = 5, 3, 4
    message, update = PaiNNMessage(F, R).double(), PaiNNUpdate(F, vector_norm=vector_norm).double()
    for param in [*message.parameters(), *update.parameters()]:
        torch.nn.init.normal_(param)
    pos = 1.5 * torch.randn(n, 3, dtype=torch.float64)
    h = torch.randn(n, F, dtype=torch.float64)
    v = torch.randn(n, F, 3, dtype=torch.float64)
    pairs = [(j, i) for i in range(n) for j in range(n) if j != i and (pos[j] - pos[i]).norm() < 3.0]
    edge_index = torch.tensor(pairs).T
    radial = torch.randn(len(pairs), R, dtype=torch.float64)  # any edge features: the block only mixes them
    cutoff = torch.rand(len(pairs), dtype=torch.float64)
    unit = torch.stack([(pos[j] - pos[i]) / (pos[j] - pos[i]).norm() for j, i in pairs])

    dh, dv = message(h, v, edge_index, radial, cutoff, unit)
    expected_dh, expected_dv = _message_by_hand(message, h, v, pos, pairs, radial, cutoff)
    assert torch.allclose(dh, expected_dh, atol=1e-12) and torch.allclose(dv, expected_dv, atol=1e-12)

    uh, uv = update(h, v)
    expected_uh, expected_uv = _update_by_hand(update, h, v)
    assert torch.allclose(uh, expected_uh, atol=1e-12) and torch.allclose(uv, expected_uv, atol=1e-12)


def test_model_adds_each_blocks_increments_to_h_and_v():
    """PaiNN's layers by hand: h <- h + Δh and v <- v + Δv after the message block, and again after the update.

    The block test above checks the increments only, and equivariance and
    the other model checks hold with or without the residual sums, so a model
    that replaced h by Δh (or v by Δv) after either block passed them. Here
    the features entering the readout are rebuilt from the positions through
    two layers: the message block's vector sum matters from the second layer
    on (v starts at zero), and v after the last update reaches no output.
    """
    torch.manual_seed(0)
    F, R, cutoff = 4, 5, 2.0
    model = PaiNN.from_config({"hidden_channels": F, "num_layers": 2, "num_radial": R, "cutoff": cutoff}).double()
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.7)
    model.radial.reset_parameters()  # n·π again, now in float64
    captured = {}
    model.readout.register_forward_pre_hook(lambda module, args: captured.update(h=args[0]))
    atoms = molecule("CH3CHO")  # 7 atoms; cutoff 2 Å keeps the bonds and leaves out the longer pairs
    atoms.rattle(0.05, seed=0)
    model(atoms_to_data(atoms, dtype=torch.float64))

    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    n = len(atoms)
    pairs = [(j, i) for i in range(n) for j in range(n) if j != i and (pos[j] - pos[i]).norm() < cutoff]
    assert 0 < len(pairs) < n * (n - 1)
    length = torch.stack([(pos[j] - pos[i]).norm() for j, i in pairs])
    number = torch.arange(1, R + 1, dtype=torch.float64)
    radial = math.sqrt(2 / cutoff) * torch.sin(number * math.pi * length[:, None] / cutoff) / length[:, None]
    cosine_cutoff = 0.5 * (torch.cos(math.pi * length / cutoff) + 1)

    h = model.embedding.weight[torch.tensor(atoms.numbers)]
    v = torch.zeros(n, F, 3, dtype=torch.float64)  # vectors start at zero (paper, sec. 4)
    for message, update in zip(model.messages, model.updates):
        dh, dv = _message_by_hand(message, h, v, pos, pairs, radial, cosine_cutoff)
        h, v = h + dh, v + dv
        dh, dv = _update_by_hand(update, h, v)
        h, v = h + dh, v + dv
    assert torch.allclose(captured["h"], h, rtol=1e-12, atol=1e-12)


def test_bad_shapes_are_named():
    message = PaiNNMessage(4, 6)
    with pytest.raises(ValueError, match=r"expected h \[N, 4\], v \[N, 4, 3\]"):
        message(torch.zeros(2, 4), torch.zeros(2, 3, 3), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 6),
                torch.zeros(0), torch.zeros(0, 3))


def test_the_papers_norm_has_a_cusp_at_lattice_sites_and_the_default_has_none():
    """At a perfect fcc site PaiNN's vectors vanish by symmetry: with the paper's norm the force
    constant F·d/δ changes with δ (a rounded |δ|); with the smooth default it is constant.
    The smoothness check is the model contract's (every 3D model runs it)."""
    from geognn.testing import check_smooth_at_symmetric_sites

    torch.manual_seed(0)
    paper = PaiNN.from_config({**SMALL, "vector_norm": "paper"}).double().eval()
    with pytest.raises(AssertionError, match="perfect fcc site"):
        check_smooth_at_symmetric_sites(paper)
    smooth = PaiNN.from_config(SMALL).double().eval()
    smooth.load_state_dict(paper.state_dict())  # the same weights: only the norm differs
    check_smooth_at_symmetric_sites(smooth)
    with pytest.raises(ValueError, match="vector_norm"):
        PaiNN.from_config({**SMALL, "vector_norm": "cusp"})


def test_checkpoints_from_before_the_option_keep_the_papers_norm(tmp_path):
    """A checkpoint saved before vector_norm existed was trained with the paper's form and is
    rebuilt with it; new checkpoints say which form they hold."""
    from dataclasses import asdict

    from geognn.models.checkpoint import model_from_checkpoint

    torch.manual_seed(1)
    model = PaiNN.from_config({**SMALL, "vector_norm": "paper"}).double()
    config = asdict(model.config)
    del config["vector_norm"]
    checkpoint = {"format_version": 1, "model_name": "painn", "model_config": config, "state_dict": model.state_dict(),
                  "normalization": {}, "train_config": {}, "metrics": {}}
    old = model_from_checkpoint(checkpoint)
    assert old.config.vector_norm == "paper" and not old.updates[0].smooth
    data = atoms_to_data(molecule("CH3CHO"), dtype=torch.float64)
    assert torch.equal(old(data)["energy"], model.eval()(data)["energy"])
    assert model_from_checkpoint({**checkpoint, "model_config": asdict(PaiNN.from_config(SMALL).config)}).config.vector_norm == "smooth"
