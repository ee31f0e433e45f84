"""What a run folder's checkpoints hold, and how a run is restored from ``last.pt``.

`Trainer` (``geognn.training.trainer``) mixes this in; it keeps the loop, this keeps the files:
``best.pt`` / ``last.pt`` are plain dicts (``format_version``, ``model_name``,
``model_config``, ``state_dict`` with the EMA weights when kept, ``normalization``,
``train_config``, ``metrics``), and ``last.pt`` adds ``training_state``: raw weights,
optimiser, schedule, EMA, counters, wall time and the RNG, enough to continue the same run
bit for bit.
"""

from __future__ import annotations

import dataclasses

import torch

from geognn.models import MODELS, save_checkpoint
from geognn.models.checkpoint import FORMAT_VERSION


class CheckpointMixin:
    """Checkpoint writing and restoring for `Trainer` (uses its model, optimiser, schedule, EMA and counters)."""

    def _prediction_state(self) -> dict:
        """The weights used for prediction: EMA average (when kept) with the model's buffers."""
        state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        if self.ema is not None:
            state.update({key: value.clone() for key, value in self.ema.shadow.items()})
        return state

    def _checkpoint(self, with_training_state: bool) -> dict:
        checkpoint = {
            "format_version": FORMAT_VERSION,
            "model_name": self.config.model.name if self.config.model.name in MODELS else type(self.model).name,
            "model_config": dataclasses.asdict(self.model.config),
            "state_dict": self._prediction_state(),
            "normalization": self.normalization.to_dict(),
            "train_config": self.config.to_dict(),
            "metrics": {"step": self.step, "epoch": self.epoch, **{f"val_{k}": v for k, v in self.val_metrics.items()}},
        }
        if with_training_state:
            checkpoint["training_state"] = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "best_val": self.best_val, "evals_since_best": self.evals_since_best,
                "last_eval_step": self.last_eval_step, "val_metrics": dict(self.val_metrics),
                "wall_s": self._wall(), "cpu_s": self._cpu(), "world_size": self.dist.world_size,
                "torch_rng": torch.get_rng_state(),
            }
        return checkpoint

    def save_last(self) -> None:
        if self.is_main:
            save_checkpoint(self._checkpoint(with_training_state=True), self.last_path)

    def _restore(self, previous: dict) -> None:
        state = previous.get("training_state")
        if state is None:
            raise ValueError(f"{self.last_path} has no training state to resume from")
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"{self.last_path} was written by a run on {state['world_size']} process(es); resume it with "
                f"the same number (now {self.dist.world_size}) so that batches and results stay the same"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        for name in ("step", "epoch", "batch_in_epoch", "best_val", "evals_since_best", "last_eval_step", "val_metrics"):
            setattr(self, name, state[name])
        self.wall_offset = state["wall_s"]
        self.cpu_offset = state.get("cpu_s", 0.0)  # absent from checkpoints written before it was kept
        torch.set_rng_state(state["torch_rng"])
