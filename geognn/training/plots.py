"""`geognn plot RUN_DIR`: learning curves from ``log.csv``, parity plots from ``predictions_test.pt``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from geognn.data.units import display_unit
from geognn.training.runlog import read_log


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, title: str, path: Path) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_learning_curves(run_dir: Path, out: Path) -> Path:
    """Target MAE (and force MAE, and then the combined loss) against step for training and validation,
    and the learning rate."""
    plt = _pyplot()
    rows = read_log(run_dir)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    factor, unit = display_unit(info.get("unit", "eV"))
    target = info.get("target", "energy")
    errors = [
        (key, f"{label} MAE [{unit}{suffix}]", factor)
        for key, label, suffix in (("energy_mae", target, ""), ("forces_mae", "force", "/Å"))
        if any(key in row for row in rows)
    ]
    # With one error term the loss is that error squared: a second panel of the same curve. Show
    # the loss only when it combines several terms.
    panels = errors if len(errors) == 1 else [("loss", "loss (weighted sum)", 1.0)] + errors
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.6))
    for axis, (key, label, scale) in zip(axes, panels):
        for split, style in (("train", "-"), ("val", "o-")):
            points = [(row["step"], row[key] * scale) for row in rows if row["split"] == split and key in row]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, markersize=3, label=split)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.legend()
    train_rows = [row for row in rows if row["split"] == "train"]
    axes[-1].plot([row["step"] for row in train_rows], [row["lr"] for row in train_rows])
    axes[-1].set_xlabel("step")
    axes[-1].set_ylabel("learning rate")
    return _save(plt, figure, f"{run_dir.name}: {info.get('target', '')}", out / "learning_curves.png")


def plot_parity(run_dir: Path, out: Path) -> Optional[Path]:
    """Predicted against reference energies (minus the per-element baseline) and force components."""
    source = run_dir / "predictions_test.pt"
    if not source.exists():
        return None
    plt = _pyplot()
    predictions = torch.load(source, weights_only=True)
    factor, unit = display_unit(predictions["unit"])
    baseline = predictions.get("baseline", torch.zeros_like(predictions["energy"]))
    panels = [(predictions["energy"] - baseline, predictions["energy_ref"] - baseline,
               f"energy − Σ element references [{unit}]", factor)]
    if "forces" in predictions:
        panels.append((predictions["forces"].reshape(-1), predictions["forces_ref"].reshape(-1),
                       f"force component [{unit}/Å]", factor))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), squeeze=False)
    for axis, (predicted, reference, label, scale) in zip(axes[0], panels):
        predicted, reference = predicted.double() * scale, reference.double() * scale
        low, high = float(torch.minimum(predicted.min(), reference.min())), float(torch.maximum(predicted.max(), reference.max()))
        axis.plot([low, high], [low, high], color="0.6", linewidth=1)
        axis.scatter(reference, predicted, s=3, alpha=0.4)
        mae = float((predicted - reference).abs().mean())
        axis.set_title(f"MAE {mae:.4g} {label.split('[')[-1].rstrip(']')}")
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"predicted {label}")
        axis.set_aspect("equal")
    return _save(plt, figure, f"{run_dir.name}: {predictions['split']} split", out / "parity.png")


def plot_run(run_dir, out=None) -> list[Path]:
    """Write ``learning_curves.png`` (and ``parity.png`` once the run has test predictions); return their paths."""
    run_dir = Path(run_dir)
    if not (run_dir / "log.csv").exists():
        raise FileNotFoundError(f"{run_dir / 'log.csv'} does not exist; is {run_dir} a geognn run folder?")
    out = Path(out) if out is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_learning_curves(run_dir, out), plot_parity(run_dir, out)]
    return [path for path in paths if path is not None]


__all__ = ["plot_run", "plot_learning_curves", "plot_parity"]
