"""The equivariant gate nonlinearity (Weiler et al. 2018; NequIP's choice).

Scalars go through an activation; every feature of l > 0 is multiplied by
an activated extra scalar of its own (its gate), which keeps it equivariant:

    in:  scalars ⊕ gates ⊕ gated        out:  act(scalars) ⊕ act_gate(gates) · gated

Activations follow NequIP: even scalars SiLU, odd scalars tanh (odd
functions keep odd parity); even gates SiLU, odd gates tanh (the nequip
package's defaults).

e3nn's ``Gate`` and ``Activation`` cannot be compiled by TorchScript (their
activations are kept in a list of modules); under `torch.jit.script` the gate
computes the same thing from plain lists made at construction
(`activation_paths`, `apply_activation_paths`): the same operations in the
same order, so the same values.
"""

# No ``from __future__ import annotations`` here: TorchScript reads the class's attribute annotations
# (EquivariantGate) as objects, not strings.
from typing import List, Tuple

import torch
from e3nn import o3
from e3nn.nn import Activation, Gate
from torch import Tensor, nn

from geognn.nn.mlp import ACTIVATIONS, SiLU, lookup

SCALAR_ACTIVATIONS = {1: "silu", -1: "tanh"}
GATE_ACTIVATIONS = {1: "silu", -1: "tanh"}


class _Abs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.abs()


def _activation(name: str):
    return _Abs() if name == "abs" else lookup(ACTIVATIONS, name, "activation")()


def activation_paths(activation: Activation) -> List[Tuple[int, str, float]]:
    """An e3nn ``Activation`` of scalars as ``(mul, function, scale)`` per block, for `apply_activation_paths`.

    ``function`` is "silu", "tanh" or "abs"; ``scale`` is e3nn's second-moment constant, or 1.0
    where e3nn leaves the function unscaled (its constant within 1e-4 of one).
    """
    names = {SiLU: "silu", nn.SiLU: "silu", nn.Tanh: "tanh", _Abs: "abs"}
    functions = {torch.nn.functional.silu: "silu", torch.tanh: "tanh", torch.abs: "abs"}
    paths = []
    for mul, (l, _), act in activation.paths:
        if act is None or l != 0:
            raise ValueError(f"only scalars that all go through an activation are supported, got {activation}")
        name = names.get(type(act.f)) or functions.get(act.f)
        if name is None:
            raise ValueError(f"no TorchScript path for the activation {act.f!r}")
        paths.append((mul, name, 1.0 if act._is_id else float(act.cst)))
    return paths


def apply_activation_paths(x: Tensor, paths: List[Tuple[int, str, float]]) -> Tensor:
    """What the e3nn ``Activation`` of `activation_paths` computes on ``x`` [..., Σ mul]: ``f(block) * scale``
    block by block (e3nn's order of operations, so its values to the last bit)."""
    out: List[Tensor] = []
    start = 0
    for mul, name, scale in paths:
        block = x.narrow(-1, start, mul)
        if name == "silu":
            block = torch.nn.functional.silu(block)
        elif name == "tanh":
            block = torch.tanh(block)
        else:
            block = block.abs()
        out.append(block if scale == 1.0 else block.mul(scale))
        start += mul
    if len(out) == 0:
        return torch.zeros_like(x)
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def _extract(x: Tensor, slices: List[Tuple[int, int]]) -> Tensor:
    """The columns ``(start, length)`` of ``x`` [..., D], in that order."""
    if len(slices) == 0:
        return x.narrow(-1, 0, 0)
    if len(slices) == 1:
        return x.narrow(-1, slices[0][0], slices[0][1])
    return torch.cat([x.narrow(-1, start, length) for start, length in slices], dim=-1)


def tp_path_exists(irreps_in1, irreps_in2, ir_out) -> bool:
    """Whether some product of an irrep of ``irreps_in1`` and one of ``irreps_in2`` contains ``ir_out``."""
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in o3.Irreps(irreps_in1) for _, ir2 in o3.Irreps(irreps_in2))


class EquivariantGate(nn.Module):
    """Gate nonlinearity whose output irreps are the reachable part of ``irreps_hidden``.

    Args:
        irreps_hidden: the features wanted after the gate, e.g. ``"32x0e + 32x1o + 32x2e"``.
        irreps_in1: the first input of the tensor product feeding the gate (node
            features); irreps the product cannot produce are dropped, and the gates
            are ``0e`` when it can produce them, else ``0o``.
        irreps_in2: its second input (edge spherical harmonics).

    ``irreps_in`` (scalars ⊕ gates ⊕ gated) is what the preceding layer must output.
    """

    __jit_ignored_attributes__ = ["gate"]  # not scriptable: TorchScript runs the plain-list path of forward
    # Types for TorchScript, which cannot infer them from empty lists.
    _slices: List[List[Tuple[int, int]]]
    _scalar_paths: List[Tuple[int, str, float]]
    _gate_paths: List[Tuple[int, str, float]]
    _gated_blocks: List[Tuple[int, int, int, int]]

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
        # The same gate as plain lists, for TorchScript: e3nn cuts its (sorted) input into scalars, gates and
        # gated irreps; each gate scalar multiplies one gated irrep, block by block (`_gated_blocks`).
        cut = self.gate.sc.cut
        starts = [s.start for s in cut.irreps_in.slices()]
        self._slices = [[(starts[i], cut.irreps_in[i].dim) for i in ins] for ins in cut.instructions]
        self._scalar_paths = activation_paths(self.gate.act_scalars)
        self._gate_paths = activation_paths(self.gate.act_gates)
        self._gated_blocks = []  # (first gate, mul, ir.dim, first gated column) per irrep of the gated part
        gate_start, column = 0, 0
        for mul, ir in self.gate.mul.irreps_in1:  # e3nn's product pairs gates and gated irreps in this order
            self._gated_blocks.append((gate_start, mul, ir.dim, column))
            gate_start, column = gate_start + mul, column + mul * ir.dim

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        """x [N, irreps_in.dim] -> [N, irreps_out.dim]."""
        if torch.jit.is_scripting():
            return self._scripted(x)
        if x.shape[-1] != self._dim_in:
            raise ValueError(f"gate expects {self._dim_in} components ({self.irreps_in}), got {x.shape[-1]}")
        return self.gate(x)

    def _scripted(self, x: Tensor) -> Tensor:
        """``self.gate(x)`` in operations TorchScript compiles, the same values."""
        if x.shape[-1] != self._dim_in:
            raise ValueError("the gate's input has the wrong number of components")
        scalars = apply_activation_paths(_extract(x, self._slices[0]), self._scalar_paths)
        if len(self._gated_blocks) == 0:
            return scalars
        gates = apply_activation_paths(_extract(x, self._slices[1]), self._gate_paths)
        gated = _extract(x, self._slices[2])
        lead = gated.shape[:-1]
        blocks = [scalars]
        for gate_start, mul, dim, column in self._gated_blocks:
            block = gated.narrow(-1, column, mul * dim).reshape(lead + [mul, dim])
            blocks.append((gates.narrow(-1, gate_start, mul).unsqueeze(-1) * block).reshape(lead + [mul * dim]))
        return torch.cat(blocks, dim=-1)

    def extra_repr(self) -> str:
        return f"irreps_in={self.irreps_in}, irreps_out={self.irreps_out}"

