"""Small building blocks shared by the layers."""

from __future__ import annotations

import math

from torch import Tensor, nn


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log(2)``: zero at zero, SchNet's activation."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "ssp": ShiftedSoftplus,
}


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
        return super().forward(x)
