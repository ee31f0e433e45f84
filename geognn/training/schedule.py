"""Learning-rate schedule: linear warm-up, then plateau reduction or cosine decay.

One small object whose whole state is a few numbers, so that a resumed run
continues the schedule exactly (``state_dict``/``load_state_dict``).

* ``plateau``: the rate is multiplied by ``plateau_factor`` when the
  validation loss has not improved for ``plateau_patience`` evaluations
  (PyTorch's ReduceLROnPlateau rule, relative threshold 1e-4), never below ``min_lr``.
* ``cosine``: from ``lr`` after warm-up down to ``min_lr`` at the last step.
* ``none``: constant after warm-up.
"""

from __future__ import annotations

import math

from geognn.training.config import OptimSection


class LRSchedule:
    def __init__(self, optimizer, section: OptimSection, total_steps: int):
        self.optimizer, self.section, self.total_steps = optimizer, section, max(int(total_steps), 1)
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evals = 0

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        section = self.section
        lr = section.lr
        if section.scheduler == "cosine":
            start = min(section.warmup_steps, self.total_steps - 1)
            progress = min(max(step - start, 0) / max(self.total_steps - 1 - start, 1), 1.0)
            lr = section.min_lr + 0.5 * (section.lr - section.min_lr) * (1 + math.cos(math.pi * progress))
        elif section.scheduler == "plateau":
            lr = max(section.lr * self.plateau_scale, section.min_lr)
        if step < section.warmup_steps:
            lr = lr * (step + 1) / section.warmup_steps
        return lr

    def set_step(self, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, val_loss: float) -> None:
        """Feed a validation loss (plateau schedule only)."""
        if self.section.scheduler != "plateau":
            return
        if val_loss < self.best * (1 - 1e-4) if self.best > 0 else val_loss < self.best:
            self.best, self.bad_evals = val_loss, 0
        else:
            self.bad_evals += 1
            if self.bad_evals > self.section.plateau_patience:
                self.plateau_scale *= self.section.plateau_factor
                self.bad_evals = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale, self.best, self.bad_evals = state["plateau_scale"], state["best"], state["bad_evals"]


__all__ = ["LRSchedule"]
