"""The equivariant gate nonlinearity (Weiler et al. 2018; NequIP's choice).

Scalars go through an activation; every feature of l > 0 is multiplied by
an activated extra scalar of its own (its gate), which keeps it equivariant:

    in:  scalars ⊕ gates ⊕ gated        out:  act(scalars) ⊕ act_gate(gates) · gated

Activations follow NequIP: even scalars SiLU, odd scalars tanh (odd
functions keep odd parity); even gates SiLU, odd gates tanh (the nequip
package's defaults).
"""

from __future__ import annotations

from e3nn import o3
from e3nn.nn import Gate
from torch import Tensor, nn

from geognn.nn.mlp import ACTIVATIONS, lookup

SCALAR_ACTIVATIONS = {1: "silu", -1: "tanh"}
GATE_ACTIVATIONS = {1: "silu", -1: "tanh"}


class _Abs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.abs()


def _activation(name: str):
    return _Abs() if name == "abs" else lookup(ACTIVATIONS, name, "activation")()


def tp_path_exists(irreps_in1, irreps_in2, ir_out) -> bool:
    """Whether some product of an irrep of ``irreps_in1`` and one of ``irreps_in2`` contains ``ir_out``."""
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in o3.Irreps(irreps_in1) for _, ir2 in o3.Irreps(irreps_in2))


class EquivariantGate(nn.Module):
    """Gate nonlinearity whose output irreps are the reachable part of ``irreps_hidden``.

    Args:
        irreps_hidden: the features wanted after the gate, e.g. ``"32x0e + 32x1o + 32x2e"``.
        irreps_in1, irreps_in2: the tensor product feeding the gate (node
            features and edge spherical harmonics); irreps it cannot produce are
            dropped, and the gates are ``0e`` when it can produce them, else ``0o``.

    ``irreps_in`` (scalars ⊕ gates ⊕ gated) is what the preceding layer must output.
    """

    def __init__(self, irreps_hidden, irreps_in1=None, irreps_in2=None):
        super().__init__()
        hidden = o3.Irreps(irreps_hidden).simplify()
        reachable = (lambda ir: True) if irreps_in1 is None else (lambda ir: tp_path_exists(irreps_in1, irreps_in2, ir))
        scalars = o3.Irreps([(mul, ir) for mul, ir in hidden if ir.l == 0 and reachable(ir)])
        gated = o3.Irreps([(mul, ir) for mul, ir in hidden if ir.l > 0 and reachable(ir)])
        gate_ir = "0e" if reachable(o3.Irrep("0e")) else "0o"
        gates = o3.Irreps([(mul, gate_ir) for mul, _ in gated])
        self.gate = Gate(
            scalars, [_activation(SCALAR_ACTIVATIONS[ir.p]) for _, ir in scalars],
            gates, [_activation(GATE_ACTIVATIONS[ir.p]) for _, ir in gates],
            gated,
        )
        self.irreps_in = self.gate.irreps_in
        self.irreps_out = self.gate.irreps_out
        self._dim_in = self.irreps_in.dim  # a plain int for the check: torch.compile cannot guard on Irreps

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        """x [N, irreps_in.dim] -> [N, irreps_out.dim]."""
        if x.shape[-1] != self._dim_in:
            raise ValueError(f"gate expects {self._dim_in} components ({self.irreps_in}), got {x.shape[-1]}")
        return self.gate(x)

    def extra_repr(self) -> str:
        return f"irreps_in={self.irreps_in}, irreps_out={self.irreps_out}"

