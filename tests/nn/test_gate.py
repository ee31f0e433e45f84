"""The gate nonlinearity by hand: which activation each scalar gets, and parity.

NequIP (Batzner et al. 2022) and e3nn: even scalars (0e) go through SiLU and
odd scalars (0o) through tanh, because only an odd function of a pseudoscalar
is again a pseudoscalar; every l > 0 irrep is multiplied by its own activated
gate scalar (SiLU for 0e gates, tanh for 0o gates). The gates in the other
tests are all built from 0e inputs, so no 0o scalar ever reaches them; here
the irreps hold 0o scalars, odd gates and both parities of l >= 1.
"""

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from torch.nn.functional import silu

from geognn.nn import EquivariantGate
from geognn.testing import assert_equivariant

DTYPE = torch.float64


def even_gates_by_hand(x, c):
    # input (e3nn sorts it by irrep, stably): 2x0o scalars, 3x0e scalars, 4x0e gates, 2x1o, 1x1e, 1x2e
    odd, even, gates = x[:, 0:2], x[:, 2:5], c["silu"] * silu(x[:, 5:9])
    vectors_1o, vector_1e, tensor_2e = x[:, 9:15].reshape(-1, 2, 3), x[:, 15:18], x[:, 18:23]
    return torch.cat([
        c["silu"] * silu(even), c["tanh"] * torch.tanh(odd),  # output scalars in irreps_hidden's order
        (vectors_1o * gates[:, 0:2, None]).flatten(1), vector_1e * gates[:, 2:3], tensor_2e * gates[:, 3:4],
    ], dim=-1)


def odd_gates_by_hand(x, c):
    # input: 2x0o scalars, 3x0o gates, 2x1o, 1x2o; a tanh(0o) gate times an odd irrep is even
    odd, gates = x[:, 0:2], c["tanh"] * torch.tanh(x[:, 2:5])
    vectors_1o, tensor_2o = x[:, 5:11].reshape(-1, 2, 3), x[:, 11:16]
    return torch.cat([
        c["tanh"] * torch.tanh(odd), (vectors_1o * gates[:, 0:2, None]).flatten(1), tensor_2o * gates[:, 2:3],
    ], dim=-1)


CASES = {  # (irreps_hidden, irreps_in1, irreps_in2), the gate's irreps in and out, its activations, its output by hand
    "even_gates": (("3x0e + 2x0o + 2x1o + 1x1e + 1x2e", None, None),
                   "2x0o + 7x0e + 2x1o + 1x1e + 1x2e", "3x0e + 2x0o + 2x1o + 1x1e + 1x2e", {"silu", "tanh"},
                   even_gates_by_hand),
    # 0e is not reachable from (0o + 1o) x (0e + 1e), so the gates are 0o; 1e is not reachable either
    "odd_gates": (("2x0e + 2x0o + 2x1o + 1x1e + 1x2o", "0o + 1o", "0e + 1e"),
                  "5x0o + 2x1o + 1x2o", "2x0o + 2x1e + 1x2e", {"tanh"}, odd_gates_by_hand),
}


def second_moment_normalizer(f):
    """1 / sqrt(E[f(z)²]) for z ~ N(0, 1), by Gauss-Hermite quadrature.

    e3nn scales every activation by this so that unit-variance inputs keep a
    unit second moment; it estimates the constant from a million samples.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    values = f(torch.from_numpy(nodes)).numpy()
    return float(np.sum(weights * values**2) / math.sqrt(2 * math.pi)) ** -0.5


def random_input(gate, seed):
    return 2.0 * torch.randn(6, gate.irreps_in.dim, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CASES)
def test_gate_is_silu_on_even_and_tanh_on_odd_scalars_by_hand(name):
    args, irreps_in, irreps_out, activations, by_hand = CASES[name]
    gate = EquivariantGate(*args)
    assert gate.irreps_in == o3.Irreps(irreps_in) and gate.irreps_out == o3.Irreps(irreps_out)

    # e3nn's normalisation constant of each activation, checked against the quadrature (Monte Carlo: ~1e-3 off)
    constants = {}
    for activation in (*gate.gate.act_scalars.acts, *gate.gate.act_gates.acts):
        constants[type(activation.f).__name__.lower()] = activation.cst
    assert set(constants) == activations
    for activation, f in (("silu", silu), ("tanh", torch.tanh)):
        if activation in constants:
            assert constants[activation] == pytest.approx(second_moment_normalizer(f), rel=3e-3)

    x = random_input(gate, seed=0)
    assert torch.allclose(gate(x), by_hand(x, constants), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_gate_with_odd_scalars_is_parity_equivariant(name):
    """Inversion multiplies each irrep by its parity p: gate(p_in · x) == p_out · gate(x).

    SiLU on a 0o scalar or a 0o gate breaks this (silu(-a) != -silu(a)).
    Rotations and reflections through `assert_equivariant` as well.
    """
    gate = EquivariantGate(*CASES[name][0])
    x = random_input(gate, seed=1)

    def parity(irreps):
        return torch.cat([torch.full((mul * ir.dim,), float(ir.p), dtype=DTYPE) for mul, ir in irreps])

    assert torch.allclose(gate(x * parity(gate.irreps_in)), gate(x) * parity(gate.irreps_out), rtol=0, atol=1e-13)
    assert_equivariant(gate, [x], transformations=("rotation", "reflection"))
