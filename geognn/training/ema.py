"""Exponential moving average of weights, used for validation, test and the saved model."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """Shadow copies θ̄ ← d·θ̄ + (1 − d)·θ of a model's floating parameters.

    The decay warms up as d_t = min(decay, (1 + t) / (10 + t)), so early
    averages are not dominated by the random initialisation (the schedule of
    TensorFlow's ExponentialMovingAverage with ``num_updates``). Buffers are
    not averaged: `swapped` uses the model's own.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - decay)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged weights; its own come back afterwards."""
        saved = {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.shadow:
                    saved[name] = param.detach().clone()
                    param.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in saved:
                        param.copy_(saved[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model's parameters: {sorted(missing)}")
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


__all__ = ["ExponentialMovingAverage"]
