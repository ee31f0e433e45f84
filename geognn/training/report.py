"""What `geognn compare` writes: the leaderboard, paired statistics, learning curves, the search.

Files in the comparison's folder:

- ``leaderboard.md`` / ``.csv`` / ``.png``: one line per model at the largest training-set size,
  ranked by the comparison's metric (test energy or force MAE, mean ± std over seeds); the csv
  has one line per run.
- ``report.md``: the leaderboard, then for each pair of models the difference in MAE with a
  paired bootstrap confidence interval (`paired_differences`), the learning-curve table with
  the fitted slope per model, the search's best values, and the models left out.
- ``learning_curve.png`` (with ``train_sizes``) and ``search_history.png`` (with ``search``).

Ranks come from the paired statistics where every run stored its per-structure test errors:
a model's rank is one plus the number of models significantly better than it, so models whose
difference is not significant share a rank.
"""

from __future__ import annotations

import csv
import math
import statistics
from itertools import combinations
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from geognn.data.units import display_unit

LEVEL = 0.95  # of the confidence intervals, and the significance of rank differences
METRIC_NAMES = {"energy_mae": "test MAE", "forces_mae": "test force MAE"}


# ------------------------------------------------------------------------ per-structure errors


def structure_errors(run_dir: Union[str, Path]) -> Optional[dict]:
    """A finished run's per-structure test errors from its ``predictions_test.pt``: ``energy`` [M]
    (absolute error), ``forces`` [M] (sum of absolute force-component errors) with
    ``force_counts`` [M] (components), and ``reference`` [M] (the reference energies, which
    identify the test structures); None for a run without predictions."""
    path = Path(run_dir) / "predictions_test.pt"
    if not path.exists():
        return None
    kept = torch.load(path, map_location="cpu", weights_only=True)
    out = {"energy": (kept["energy"] - kept["energy_ref"]).abs().double().numpy(),
           "reference": kept["energy_ref"].double().numpy(), "num_atoms": kept["num_atoms"].numpy()}
    if "forces" in kept:
        structure = torch.repeat_interleave(torch.arange(len(kept["num_atoms"])), kept["num_atoms"])
        sums = torch.zeros(len(kept["num_atoms"]), dtype=torch.float64)
        sums.index_add_(0, structure, (kept["forces"] - kept["forces_ref"]).abs().double().sum(dim=1))
        out["forces"], out["force_counts"] = sums.numpy(), 3 * kept["num_atoms"].double().numpy()
    return out


def write_structure_errors(run_dir: Union[str, Path]) -> Optional[Path]:
    """``test_errors.csv`` in a run folder: per test structure its atoms, absolute energy error and
    force MAE (target units), in the order of the test split."""
    errors = structure_errors(run_dir)
    if errors is None:
        return None
    path = Path(run_dir) / "test_errors.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["structure", "num_atoms", "energy_abs_error"] + (["forces_mae"] if "forces" in errors else []))
        for k in range(len(errors["energy"])):
            row = [k, int(errors["num_atoms"][k]), f"{errors['energy'][k]:.10g}"]
            if "forces" in errors:
                row.append(f"{errors['forces'][k] / errors['force_counts'][k]:.10g}")
            writer.writerow(row)
    return path


def paired_differences(rows: list[dict], metric: str, samples: int = 10000, seed: int = 0) -> tuple[list, str]:
    """Each pair of models' difference in ``metric`` (worse − better) with its paired bootstrap
    interval over the test structures (and the seeds), and the shared ranks.

    Returns (pairs, note): ``pairs`` holds one dict per pair, ``better``, ``worse`` and the result
    of `paired_bootstrap`; it is empty, with a note saying why, when a run has no per-structure
    errors or the runs were tested on different structures."""
    from geognn.training.stats import paired_bootstrap

    errors = {}
    for row in rows:
        found = structure_errors(row["run_dir"]) if row.get("run_dir") else None
        if found is None:
            return [], f"no paired statistics: {row.get('run_dir') or row['model']} has no predictions_test.pt"
        if metric == "forces_mae" and "forces" not in found:
            return [], f"no paired statistics: {row['run_dir']} has no test forces"
        errors.setdefault(row["model"], []).append(found)
    reference = next(iter(errors.values()))[0]["reference"]
    if any(e["reference"].shape != reference.shape or not np.array_equal(e["reference"], reference)
           for runs in errors.values() for e in runs):
        return [], "no paired statistics: the runs were tested on different structures (another split or dataset)"
    key = "forces" if metric == "forces_mae" else "energy"
    stacked = {label: np.stack([e[key] for e in runs]) for label, runs in errors.items()}
    counts = next(iter(errors.values()))[0]["force_counts"] if key == "forces" else None
    means = {label: float(np.mean(values.sum(axis=1) / (counts.sum() if counts is not None else values.shape[1])))
             for label, values in stacked.items()}
    pairs = []
    for a, b in combinations(sorted(stacked, key=means.get), 2):  # a is at least as good as b
        result = paired_bootstrap(stacked[b], stacked[a], counts=counts, samples=samples, level=LEVEL, seed=seed)
        pairs.append({"better": a, "worse": b, **result})
    return pairs, ""


def shared_ranks_of(summary: list[dict], pairs: list[dict], metric: str) -> dict:
    """label -> rank: with paired statistics, one plus the models significantly better; else 1, 2, 3..."""
    from geognn.training.stats import shared_ranks

    if not pairs:
        return {s["model"]: rank for rank, s in enumerate(summary, 1)}
    significant = {(p["better"], p["worse"]): p["significant"] for p in pairs}
    return shared_ranks({s["model"]: s[metric] for s in summary}, significant)


# ----------------------------------------------------------------------------------- leaderboard


def summarize(rows: list[dict], metric: Optional[str] = None) -> list[dict]:
    """One line per model, best first by ``metric`` (default: force MAE when every model has it,
    else energy MAE): the mean (and sample std) over its seeds of the test MAEs, training time (wall
    clock and CPU) and throughput, and the median of the peak memory (robust to one run's allocator having kept more)."""
    summary = []
    for label in dict.fromkeys(row["model"] for row in rows):
        runs = [row for row in rows if row["model"] == label]
        maes = [row["energy_mae"] for row in runs]
        forces = [row["forces_mae"] for row in runs if row.get("forces_mae") is not None]
        stress = [row["stress_mae"] for row in runs if row.get("stress_mae") is not None]
        summary.append({
            "model": label,
            "parameters": runs[0]["parameters"],
            "seeds": len(runs),
            "unit": runs[0]["unit"],
            "energy_mae": _mean(maes),
            "energy_mae_std": _std(maes),
            "forces_mae": _mean(forces) if forces else None,
            "forces_mae_std": _std(forces) if forces else None,
            "stress_mae": _mean(stress) if stress else None,
            "stress_mae_std": _std(stress) if stress else None,
            "train_s": _mean([row["train_s"] for row in runs]),
            "cpu_s": _mean([row.get("cpu_s", math.nan) for row in runs]),
            "inference_per_s": _mean([row.get("inference_per_s", math.nan) for row in runs]),
            "peak_memory_mb": _median([row.get("peak_memory_mb", math.nan) for row in runs]),
        })
    return sorted(summary, key=lambda s: s[metric or default_metric(summary)])


def default_metric(summary: list[dict]) -> str:
    """Force MAE when every model has one, else energy MAE."""
    return "forces_mae" if all(s["forces_mae"] is not None for s in summary) else "energy_mae"


def _mean(values) -> float:
    return sum(values) / len(values) if values else math.nan


def _median(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _std(values) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _scaled(value: Optional[float], unit: str) -> tuple[float, str]:
    scale, shown = display_unit(unit)
    return (value * scale if value is not None else math.nan), shown


def _metric_unit(metric: str, shown: str) -> str:
    return f"{shown}/Å" if metric == "forces_mae" else shown


def leaderboard_lines(summary: list[dict], ranks: dict) -> list[str]:
    unit = summary[0]["unit"]
    _, shown = _scaled(0.0, unit)
    with_forces = all(s["forces_mae"] is not None for s in summary)
    with_stress = all(s.get("stress_mae") is not None for s in summary)
    header = ["rank", "model", "parameters", f"test MAE ({shown})"]
    if with_forces:
        header.append(f"test force MAE ({shown}/Å)")
    if with_stress:
        header.append(f"test stress MAE ({shown}/Å³)")
    header += ["training time (s)", "CPU time (s)", "inference (structures/s)", "peak memory (MB, median)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |"]
    for s in summary:
        cells = [str(ranks[s["model"]]), s["model"], f"{s['parameters']:,}",
                 _pm(_scaled(s["energy_mae"], unit)[0], _scaled(s["energy_mae_std"], unit)[0])]
        if with_forces:
            cells.append(_pm(_scaled(s["forces_mae"], unit)[0], _scaled(s["forces_mae_std"], unit)[0]))
        if with_stress:
            cells.append(_pm(_scaled(s["stress_mae"], unit)[0], _scaled(s["stress_mae_std"], unit)[0], digits=2))
        cells += [f"{s['train_s']:.0f}", f"{s['cpu_s']:.0f}", f"{s['inference_per_s']:.0f}", f"{s['peak_memory_mb']:.0f}",
                  str(s["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_leaderboard(rows: list[dict], out: Union[str, Path], metric: Optional[str] = None,
                      samples: int = 10000, pairs: Optional[list] = None) -> list[Path]:
    """``leaderboard.md`` (ranked by ``metric``, ties of insignificant differences sharing a rank),
    ``leaderboard.csv`` (one line per run) and ``leaderboard.png``. ``pairs``: the rows'
    `paired_differences`, when the caller has them already (else they are computed here)."""
    out = Path(out)
    summary = summarize(rows, metric)
    metric = metric or default_metric(summary)
    if pairs is None:
        pairs, _ = paired_differences(rows, metric, samples)
    md = out / "leaderboard.md"
    md.write_text("\n".join(leaderboard_lines(summary, shared_ranks_of(summary, pairs, metric))) + "\n")
    table = out / "leaderboard.csv"
    fields = ["model", "seed", "parameters", "unit", "energy_mae", "forces_mae", "stress_mae", "train_s", "cpu_s", "steps",
              "best_step", "inference_per_s", "peak_memory_mb", "device", "run_dir"]
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return [md, table, _plot(rows, out / "leaderboard.png", summary[0]["unit"])]


def _pm(mean: float, std: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _plot(rows: list[dict], path: Path, unit: str) -> Path:
    from geognn.training.plots import _pyplot, _save, plain_log_axis, plain_time_axis

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for k, label in enumerate(dict.fromkeys(row["model"] for row in rows)):
        runs = [row for row in rows if row["model"] == label]
        values = [_scaled(row["energy_mae"], unit)[0] for row in runs]
        axis.scatter([row["train_s"] for row in runs], values, label=label, color=f"C{k % 10}", s=40)
    axis.set_xlabel("training time (s)")
    axis.set_ylabel(f"test MAE ({_scaled(0.0, unit)[1]})")
    # Equal time budgets land within a fraction of a second of each other: an axis from 0 shows
    # them as equal instead of spreading noise over the width.
    plain_time_axis(axis.xaxis, [row["train_s"] for row in rows])
    plain_log_axis(axis.yaxis, [_scaled(row["energy_mae"], unit)[0] for row in rows])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(plt, figure, "test MAE against training time, one point per run", path)


# -------------------------------------------------------------------------------- learning curve


def learning_curve(rows: list[dict], metric: str) -> dict:
    """label -> ``{"sizes", "mean", "std", "slope", "prefactor", "r2"}``: the metric's mean and std
    over seeds per training-set size, and the power law fitted to every run (log-log least squares)."""
    from geognn.training.stats import power_law_fit

    curves = {}
    for label in dict.fromkeys(row["model"] for row in rows):
        runs = [row for row in rows if row["model"] == label and row.get(metric) is not None]
        sizes = sorted({row["train_size"] for row in runs})
        values = [[row[metric] for row in runs if row["train_size"] == n] for n in sizes]
        curve = {"sizes": sizes, "mean": [_mean(v) for v in values], "std": [_std(v) for v in values]}
        if len(sizes) >= 2:
            curve.update(power_law_fit(np.array([row["train_size"] for row in runs], dtype=float),
                                       np.array([row[metric] for row in runs], dtype=float)))
        curves[label] = curve
    return curves


def plot_learning_curve(curves: dict, unit: str, metric: str, path: Path) -> Path:
    """``learning_curve.png``: test error against training-set size, log-log, with each model's fit."""
    from geognn.training.plots import _pyplot, _save, plain_log_axis

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    scale, shown = display_unit(unit)
    low_high = []
    for k, (label, curve) in enumerate(curves.items()):
        color = f"C{k % 10}"
        sizes = np.array(curve["sizes"], dtype=float)
        mean, std = np.array(curve["mean"]) * scale, np.nan_to_num(np.array(curve["std"]) * scale)
        name = f"{label} (slope {curve['slope']:.2f})" if "slope" in curve else label
        axis.errorbar(sizes, mean, yerr=std, color=color, marker="o", linestyle="none", capsize=3, label=name)
        if "slope" in curve:
            grid = np.geomspace(sizes.min(), sizes.max(), 50)
            axis.plot(grid, curve["prefactor"] * grid ** curve["slope"] * scale, color=color, linestyle="--")
        low_high += [*(mean - std), *(mean + std)]
    plain_log_axis(axis.xaxis, [n for curve in curves.values() for n in curve["sizes"]])
    plain_log_axis(axis.yaxis, [value for value in low_high if value > 0])
    axis.set_xlabel("training structures")
    axis.set_ylabel(f"{METRIC_NAMES[metric]} ({_metric_unit(metric, shown)})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    return _save(plt, figure, "learning curves: mean ± std over seeds, power-law fit", path)


def learning_curve_lines(curves: dict, unit: str, metric: str) -> list[str]:
    scale, shown = display_unit(unit)
    sizes = sorted({n for curve in curves.values() for n in curve["sizes"]})
    header = ["model"] + [f"n = {n:,}" for n in sizes] + ["slope", "R²"]
    lines = [f"{METRIC_NAMES[metric]} ({_metric_unit(metric, shown)}) against training-set size:", "",
             "| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for label, curve in curves.items():
        values = dict(zip(curve["sizes"], zip(curve["mean"], curve["std"])))
        cells = [label] + [_pm(values[n][0] * scale, values[n][1] * scale) if n in values else "" for n in sizes]
        cells += [f"{curve['slope']:.2f}", f"{curve['r2']:.3f}"] if "slope" in curve else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------------ the report


def pair_lines(pairs: list[dict], unit: str, metric: str, samples: int) -> list[str]:
    scale, shown = display_unit(unit)
    lines = [f"Paired differences in {METRIC_NAMES[metric]} ({_metric_unit(metric, shown)}), worse − better: "
             f"{LEVEL:.0%} bootstrap intervals from {samples:,} resamplings of the test structures (the same "
             "structures for both models) and of each model's seeds; * = the interval excludes 0.", "",
             "| better | worse | difference | 95% interval | p | significant |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for p in pairs:
        lines.append(f"| {p['better']} | {p['worse']} | {p['difference'] * scale:.2f} | "
                     f"[{p['low'] * scale:.2f}, {p['high'] * scale:.2f}] | {p['p_value']:.3g} | "
                     f"{'*' if p['significant'] else ''} |")
    return lines


def write_report(config, rows: list[dict]) -> list[Path]:
    """Every file of a finished comparison (see the module doc); returns their paths."""
    out = Path(config.base.log.run_dir)
    metric = config.metric()
    largest = config.largest_size()
    main_rows = [row for row in rows if row.get("train_size") == largest]
    pairs, note = paired_differences(main_rows, metric, config.bootstrap_samples)  # the bootstrap, once
    files = write_leaderboard(main_rows, out, metric, config.bootstrap_samples, pairs=pairs)
    summary = summarize(main_rows, metric)
    unit = summary[0]["unit"]
    size = f" (training set {largest:,} structures)" if largest else ""
    text = [f"# Comparison: {out}", "", f"Ranked by {METRIC_NAMES[metric]}{size}; models whose difference is "
            "not significant share a rank.", "", *leaderboard_lines(summary, shared_ranks_of(summary, pairs, metric)), ""]
    text += [*pair_lines(pairs, unit, metric, config.bootstrap_samples), ""] if pairs else [note, ""]
    if config.train_sizes:
        curves = learning_curve(rows, metric)
        text += ["## Learning curves", "", *learning_curve_lines(curves, unit, metric), ""]
        files.append(plot_learning_curve(curves, unit, metric, out / "learning_curve.png"))
    if config.search is not None:
        from geognn.training.search import _shown, history, plot_history

        trials = history(config)
        text += ["## Hyperparameter search", "", f"{config.search.trials} trials per model, each under the same "
                 f"budget ({_budget(config.search.optim)}), on validation data only; the best values were then "
                 "trained on every seed.", "", "| model | finished | pruned | failed | best validation loss | values |",
                 "| --- | ---: | ---: | ---: | ---: | --- |"]
        for label in config.spaces:
            states = [state for _, state, _ in trials.get(label, [])]
            best = config.tuned.get(label, {})
            values = ", ".join(f"{k} = {_shown(v)}" for k, v in best.items())
            finished = [value for _, state, value in trials.get(label, []) if state == "complete"]
            text.append(f"| {label} | {states.count('complete')} | {states.count('pruned')} | {states.count('fail')} | "
                        f"{min(finished):.4g} | {values} |" if finished else f"| {label} | 0 | | | | |")
        text.append("")
        files.append(plot_history(trials, out / "search_history.png"))
    if getattr(config, "materials", None) is not None and any("materials" in row for row in main_rows):
        from geognn.training.physics import materials_lines, reference_values, write_materials_csv

        reference = reference_values(config.materials, out)
        text += ["## Crystal physics", "", *materials_lines(config.materials, main_rows, reference), ""]
        files.append(write_materials_csv(main_rows, reference, out / "materials.csv", config.materials))
    if getattr(config, "optim", None):
        text += ["## Per-model optimizer settings", "", "Every other setting is the recipe's, shared by all models.", ""]
        text += [f"- {label}: " + ", ".join(f"optim.{k} = {v}" for k, v in settings.items())
                 for label, settings in config.optim.items()] + [""]
    if config.left_out:
        text += ["## Left out", ""] + [f"- {label}: {reason}" for label, reason in config.left_out.items()] + [""]
    report = out / "report.md"
    report.write_text("\n".join(text))
    return [report, *files]


def _budget(optim: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in optim.items()) or "the recipe's optim"


__all__ = ["summarize", "write_leaderboard", "write_report", "structure_errors", "write_structure_errors",
           "paired_differences", "learning_curve", "plot_learning_curve"]
