"""Small building blocks shared by the layers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


# torch's softplus returns x itself above `threshold` (20 by default), which leaves a jump of
# log(1 + e^-20) = 2.06e-9 at 20: in float64 a rotated input whose pre-activation rounds to the
# other side of 20 moves the output by that much (SchNet's equivariance test once failed at 2e-9
# against 1e-10). From 40 on, log(1 + e^x) rounds to x itself in float64 and float32 (e^-40 =
# 4e-18 is below half an ulp of 40), so there the switch is exact and costs nothing.
SOFTPLUS_THRESHOLD = 40.0


class Softplus(nn.Softplus):
    """``log(1 + e^x)``, continuous to the last bit in float64 (see `SOFTPLUS_THRESHOLD`)."""

    def __init__(self, beta: float = 1.0, threshold: float = SOFTPLUS_THRESHOLD):
        super().__init__(beta, threshold)


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log(2)``: zero at zero, SchNet's activation (continuous, see `Softplus`)."""

    def __init__(self):
        super().__init__()
        self.threshold, self.shift = SOFTPLUS_THRESHOLD, math.log(2.0)  # plain floats: TorchScript sees constants

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x, threshold=self.threshold) - self.shift


class _SiLUFunction(torch.autograd.Function):
    """silu(x) = x σ(x), whose backward is `_SiLUGradient` (a function with its own derivative)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return nn.functional.silu(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return _SiLUGradient.apply(grad, x)


class _SiLUGradient(torch.autograd.Function):
    """``grad * silu'(x)`` in one fused kernel, differentiated by hand:
    d/dgrad = silu'(x), d/dx = grad * silu''(x) with silu'' = σ(1 - σ)(2 + x(1 - 2σ)).

    Force training differentiates the activation twice (forces with create_graph, then the
    loss); autograd's generic double backward of silu runs about twice as many elementwise
    passes over [edges, channels] tensors. Written with differentiable ops, so higher
    derivatives still work.
    """

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(grad, x)
        return torch.ops.aten.silu_backward(grad, x)

    @staticmethod
    def backward(ctx, outer: Tensor):
        grad, x = ctx.saved_tensors
        d_grad = _SiLUGradient.apply(outer, x) if ctx.needs_input_grad[0] else None
        d_x = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(x)
            bend = (x * (1.0 - 2.0 * s)).add_(2.0)  # 2 + x(1 - 2σ)
            d_x = torch.ops.aten.sigmoid_backward(outer * grad * bend, s)  # (...) σ(1 - σ)
        return d_grad, d_x


class SiLU(nn.SiLU):
    """`torch.nn.SiLU` with the same values and derivatives, cheaper when differentiated twice."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or not torch.is_grad_enabled() or not x.requires_grad:
            return nn.functional.silu(x)
        return _SiLUFunction.apply(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": Softplus,
    "ssp": ShiftedSoftplus,
}


def second_moment_gain(activation: str, points: int = 80) -> float:
    """``E[act(x)²]^(-1/2)`` for x ~ N(0, 1) (Gauss-Hermite quadrature): the weight scale after
    which ``act(W x)`` keeps unit second moment (1.68 for SiLU, √2 for ReLU)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    x = torch.tensor(nodes, dtype=torch.float64)
    with torch.no_grad():
        values = lookup(ACTIVATIONS, activation, "activation")()(x).numpy()
    moment = float((weights * values**2).sum() / weights.sum())
    return moment ** -0.5


class Float64Constants:
    """Mixin for a module whose constant float buffers are computed in float64 ("masters").

    `register_constant` keeps the float64 value and registers a (non-persistent) buffer in
    the default dtype; when the module's dtype changes the buffer is re-made from the master,
    so that ``model.float().double()`` does not keep float32's rounding of the constants.
    """

    def register_constant(self, name: str, value: Tensor) -> None:
        self.__dict__.setdefault("_masters", {})[name] = value
        self.register_buffer(name, value.to(torch.get_default_dtype()), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, master in self.__dict__.get("_masters", {}).items():
            buffer = getattr(self, name)
            setattr(self, name, master.to(device=buffer.device, dtype=buffer.dtype))
        return self


def lookup(registry: dict, name: str, what: str):
    """``registry[name]``, or a ValueError listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}") from None


class MLP(nn.Sequential):
    """Linear layers with an activation between them (and after the last if ``activate_last``)."""

    def __init__(self, channels: list[int], activation: str = "silu", activate_last: bool = False, bias: bool = True):
        if len(channels) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {channels}")
        layers: list[nn.Module] = []
        act = lookup(ACTIVATIONS, activation, "activation")
        for k, (fan_in, fan_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Linear(fan_in, fan_out, bias=bias))
            if k < len(channels) - 2 or activate_last:
                layers.append(act())
        super().__init__(*layers)
        self.channels = list(channels)

    def reset_parameters(self) -> None:
        for layer in self:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)
        return x
