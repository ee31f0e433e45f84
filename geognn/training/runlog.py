"""What a run writes as it goes: ``log.csv`` (and TensorBoard events when installed).

``log.csv`` has one row per training log interval (``split=train``, errors
averaged over the interval's batches) and one per validation (``split=val``,
EMA weights). Values are in the target's unit (``run.json`` names it); ``wall_s`` and
``cpu_s`` are the wall-clock and CPU time (of the training process, all its threads; data
workers are processes of their own) since the run began, resumes included. A resumed run
first drops the rows written after the checkpoint it resumes from, so the file reads as one
uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Optional

from geognn.training.loss import QUANTITIES

COLUMNS = (["step", "epoch", "split", "lr", "loss"] + [f"{q}_{s}" for q in QUANTITIES for s in ("mae", "rmse")]
           + ["wall_s", "cpu_s"])


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: Optional[int] = None):
        self.path = Path(run_dir) / "log.csv"
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif not self.path.exists() or resume_step is None:
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(COLUMNS)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("log.tensorboard is set but tensorboard is not installed; writing log.csv only "
                              "(pip install tensorboard)", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        # Rewritten under today's columns, so that a log from an older geognn (fewer columns) and the
        # rows this resume appends share one header.
        with open(self.path, newline="") as handle:
            kept = [row for row in csv.DictReader(handle) if row.get("step") and int(row["step"]) <= step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, step: int, epoch: int, split: str, lr: float, loss: float, metrics: dict, wall_s: float,
              cpu_s: float) -> None:
        values = {"step": step, "epoch": epoch, "split": split, "lr": f"{lr:.6g}", "loss": f"{loss:.8g}",
                  "wall_s": f"{wall_s:.2f}", "cpu_s": f"{cpu_s:.2f}"}
        values.update({key: f"{value:.8g}" for key, value in metrics.items() if key in COLUMNS})
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([values.get(column, "") for column in COLUMNS])
        if self.writer is not None:
            self.writer.add_scalar(f"{split}/loss", loss, step)
            for key, value in metrics.items():
                if math.isfinite(value):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            if split == "train":
                self.writer.add_scalar("lr", lr, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(run_dir) -> list[dict]:
    """Rows of ``log.csv`` as dicts of floats (``split`` stays a string; empty cells are dropped)."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a geognn run folder?")
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({key: (value if key == "split" else float(value)) for key, value in row.items() if value != ""})
    return rows


__all__ = ["COLUMNS", "RunLog", "read_log"]
