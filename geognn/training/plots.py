"""`geognn plot RUN_DIR`: learning curves from ``log.csv``, parity plots from ``predictions_test.pt``."""

from __future__ import annotations

import json
import math
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


def _plain(value: float, decimals: Optional[int] = None) -> str:
    """A tick label without exponents or offsets: 0.02, 200, 10000, -10450."""
    if value == 0:
        return "0"
    if decimals is None:
        decimals = max(0, -math.floor(math.log10(abs(value))) + 2) if abs(value) < 1 else 0
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"


def _nice_below(value: float) -> float:
    """The largest 1, 2 or 5 × 10ⁿ at most ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(step * power for step in (1, 2, 5) if step * power <= value * (1 + 1e-12))


def _nice_above(value: float) -> float:
    power = 10.0 ** math.floor(math.log10(value))
    return min(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-12))


def plain_log_axis(axis, values) -> None:
    """A log ``axis`` (``axes.yaxis``) labelled at 1, 2 and 5 × 10ⁿ in plain numbers ("200", not
    "2×10²"), its limits widened to such values so that at least two labels show even when the
    values span less than a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes = axis.axes
    set_scale = axes.set_yscale if axis is axes.yaxis else axes.set_xscale
    set_lim = axes.set_ylim if axis is axes.yaxis else axes.set_xlim
    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: _plain(value)))
    axis.set_minor_formatter(NullFormatter())
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if positive:
        low, high = _nice_below(min(positive)), _nice_above(max(positive))
        set_lim(low, high if high > low else _nice_above(1.5 * low))  # all values on one 1-2-5 mark


def plain_time_axis(axis, values) -> None:
    """A linear ``axis`` of durations from 0 to a little past the largest, in plain numbers."""
    from matplotlib.ticker import ScalarFormatter

    axes = axis.axes
    set_lim = axes.set_xlim if axis is axes.xaxis else axes.set_ylim
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite and max(finite) > 0:
        set_lim(0, 1.05 * max(finite))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def common_offset(low: float, high: float) -> tuple[float, Optional[int]]:
    """A round number to subtract from values in [low, high] whose spread is under 1% of their
    size (total energies: -10,452,000 to -10,448,000 meV), so that tick labels show the spread
    ("-2000" ... "2000") and the label the offset; (0, None) when the plain values are short enough.
    Also returns the decimals the offset needs."""
    size, spread = max(abs(low), abs(high)), high - low
    if size < 1000 or (spread > 0 and spread * 100 > size):
        return 0.0, None
    exponent = math.floor(math.log10(spread)) if spread > 0 else math.floor(math.log10(size)) - 2
    step = 10.0 ** exponent
    return round((low + high) / 2 / step) * step, max(0, -exponent)


def plain_linear_ticks(axes, nbins: int = 5) -> None:
    """At most ``nbins`` plain labels per axis (no offset or ×10ⁿ corner text), the x labels
    slanted so that long ones (energies) do not run into each other."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=nbins))
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
    axes.tick_params(axis="x", labelrotation=30)


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
        mae = float((predicted - reference).abs().mean())
        error_unit = label.split("[")[-1].rstrip("]")
        low, high = float(torch.minimum(predicted.min(), reference.min())), float(torch.maximum(predicted.max(), reference.max()))
        if scale == 1000.0 and max(abs(low), abs(high)) >= 1e5:  # total energies: eV ticks, not 8-digit meV ones
            predicted, reference, low, high = predicted / 1000, reference / 1000, low / 1000, high / 1000
            label = label.replace(f"[{unit}", f"[{predictions['unit']}")
        offset, decimals = common_offset(low, high)
        predicted, reference, low, high = predicted - offset, reference - offset, low - offset, high - offset
        if offset:  # said in the label, not as matplotlib's "1e7" / "+1.045e7" corner text
            name, unit_part = label.rsplit(" [", 1)
            sign = "−" if offset > 0 else "+"
            label = f"{name}\n{sign} {abs(offset):,.{decimals}f} [{unit_part}"
        axis.plot([low, high], [low, high], color="0.6", linewidth=1)
        axis.scatter(reference, predicted, s=3, alpha=0.4)
        axis.set_title(f"MAE {mae:.4g} {error_unit}")
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"predicted {label}")
        axis.set_aspect("equal")
        plain_linear_ticks(axis)
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
