"""PaiNN: the model checks, and one message and one update block against the paper's equations by hand."""

import pytest
import torch

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


def test_message_and_update_are_painns_equations_by_hand():
    """Eq. 7-10 of Schütt et al. 2021 with loops over pairs and channels.

    A block that took v_i for v_j, the direction i -> j reversed, swapped the
    three filter parts, left the cutoff off the filter's bias, or used U v for
    V v in the norm fails.
    """
    torch.manual_seed(0)
    n, F, R = 5, 3, 4
    message, update = PaiNNMessage(F, R).double(), PaiNNUpdate(F).double()
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

    phi = message.phi
    for i in range(n):
        sum_s, sum_v = torch.zeros(F, dtype=torch.float64), torch.zeros(F, 3, dtype=torch.float64)
        for k, (j, receiver) in enumerate(pairs):
            if receiver != i:
                continue
            x = _dense(phi[2], _silu(_dense(phi[0], h[j]))) * _dense(message.filter, radial[k]) * cutoff[k]
            x_s, x_vv, x_vs = x[:F], x[F:2 * F], x[2 * F:]
            sum_s = sum_s + x_s
            for c in range(F):
                sum_v[c] = sum_v[c] + v[j, c] * x_vv[c] + x_vs[c] * (pos[j] - pos[i]) / (pos[j] - pos[i]).norm()
        assert torch.allclose(dh[i], sum_s, atol=1e-12) and torch.allclose(dv[i], sum_v, atol=1e-12)

    uh, uv_out = update(h, v)
    for i in range(n):
        U_v = update.U.weight @ v[i]  # [F, 3]: channel mixing
        V_v = update.V.weight @ v[i]
        a = _dense(update.mlp[2], _silu(_dense(update.mlp[0], torch.cat([h[i], torch.sqrt((V_v**2).sum(-1) + 1e-8)]))))
        a_vv, a_sv, a_ss = a[:F], a[F:2 * F], a[2 * F:]
        assert torch.allclose(uv_out[i], a_vv.unsqueeze(-1) * U_v, atol=1e-12)
        assert torch.allclose(uh[i], a_ss + a_sv * (U_v * V_v).sum(-1), atol=1e-12)


def test_bad_shapes_are_named():
    message = PaiNNMessage(4, 6)
    with pytest.raises(ValueError, match=r"expected h \[N, 4\], v \[N, 4, 3\]"):
        message(torch.zeros(2, 4), torch.zeros(2, 3, 3), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 6),
                torch.zeros(0), torch.zeros(0, 3))
