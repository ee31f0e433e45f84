"""`geognn compare`: several models trained under identical conditions, and a leaderboard.

A comparison recipe is a training recipe whose ``model`` section is replaced by ``models`` (label
-> options) and which adds ``seeds``::

    models:
      egnn: {hidden_channels: 64, num_layers: 4}          # label = a name in MODELS: its options
      schnet: {}
      egnn-wide: {name: egnn, options: {hidden_channels: 128}}   # any label: name + options
    seeds: [0, 1]
    data: ...      # the same data, split, loss, optim (budget) and device for every run
    log: {run_dir: runs/compare}

Every (model, seed) is a normal run folder ``RUN_DIR/LABEL/seedS`` trained by `fit`; rerunning
skips finished runs (those with ``test_metrics.json``) and resumes interrupted ones (a
``last.pt`` without test metrics), but only when the run's ``config.yaml`` is the recipe that
would be run now: a run made under another recipe (another ``optim.lr``, ``max_minutes``, model
option...) is refused before anything trains, with the settings that changed, unless
``rerun_changed`` (``geognn compare --rerun-changed``) moves it aside to ``seedS.replaced-N`` and
trains it again. Settings that change how a run is watched or stored, not what it computes
(`NOT_RESULT_SETTINGS`), do not count.

The leaderboard (``leaderboard.md``, ``.csv`` and ``.png`` in ``RUN_DIR``) lists per model the
parameters, the test MAE (mean ± std over seeds), the training time, inference throughput (mean
over seeds) and peak memory (median over seeds). Throughput and memory are measured after
training in a fresh process per run (``python -m geognn.training.compare --measure CHECKPOINT``)
the same way every time (`MEASURE_METHOD`, stored in ``measured.json``; a run measured another
way is measured again). Budgets given in epochs or steps reproduce the same numbers on a rerun
with the same seeds; a ``max_minutes`` budget depends on the machine's speed.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

import torch

from geognn.data.units import display_unit
from geognn.training.config import ConfigError, ModelSection, TrainConfig, from_dict, load_config
from geognn.training.runlog import read_log


@dataclass
class CompareConfig:
    """A comparison: the shared training recipe, the models (label -> `ModelSection`) and the seeds."""

    base: TrainConfig
    models: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])

    def run_dir(self, label: str, seed: int) -> Path:
        return Path(self.base.log.run_dir) / label / f"seed{seed}"

    def run_config(self, label: str, seed: int) -> TrainConfig:
        log = replace(self.base.log, run_dir=str(self.run_dir(label, seed)))
        return replace(self.base, model=self.models[label], seed=seed, log=log)


def parse_compare(mapping) -> CompareConfig:
    """Build a `CompareConfig` from a parsed YAML mapping (every key checked, as for `geognn train`)."""
    from geognn.models import MODELS

    if not isinstance(mapping, dict):
        raise ConfigError("a comparison recipe is a mapping with 'models', 'seeds' and the training sections")
    mapping = dict(mapping)
    if "model" in mapping:
        raise ConfigError("a comparison recipe names its models under 'models' (label -> options), not 'model'")
    models_raw = mapping.pop("models", None)
    seeds = mapping.pop("seeds", [0])
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError("models: give a mapping from labels (names in MODELS) to their options")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {seeds} repeats a seed")
    models = {}
    for label, value in models_raw.items():
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise ConfigError(f"models.{label}: expected a mapping of options, got {value!r}")
        if "name" in value:
            section = from_dict(ModelSection, value, f"models.{label}")
        else:
            section = ModelSection(name=str(label), options=dict(value))
        if section.name not in MODELS:
            raise ConfigError(f"models.{label}: {section.name!r} is not a model; choose from {', '.join(MODELS)} "
                              "(or give name: and options: for a label of your own)")
        models[str(label)] = section
    base = from_dict(TrainConfig, mapping)
    if not base.log.run_dir:
        raise ConfigError("log.run_dir: the comparison needs a folder for its runs and leaderboard")
    return CompareConfig(base, models, list(seeds))


def load_compare(path) -> CompareConfig:
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"comparison recipe {path} does not exist")
    try:
        return parse_compare(yaml.safe_load(path.read_text()))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------------------ runs


def run_all(config: CompareConfig, measure: bool = True, log=print, rerun_changed: bool = False) -> list[dict]:
    """Train every (model, seed) not finished yet, measure it, and return one row per run.

    Raises:
        FileExistsError: a run folder holds a run made under another recipe and ``rerun_changed``
            is False; the message names the settings that changed.
    """
    from geognn.training.trainer import check_model_and_loss, fit

    for label in config.models:  # refuse a bad combination before any training starts
        check_model_and_loss(config.run_config(label, config.seeds[0]))
    changed = changed_runs(config)  # and a folder of another recipe, before anything trains
    if changed and not rerun_changed:
        raise FileExistsError(_changed_message(config, changed))
    for (label, seed), changes in changed.items():
        old = _move_aside(config.run_dir(label, seed))
        log(f"{label} seed {seed}: made under another recipe ({', '.join(changes)}); moved to {old}, training again")
    rows = []
    for label in config.models:
        for seed in config.seeds:
            run_dir = config.run_dir(label, seed)
            if (run_dir / "test_metrics.json").exists():
                log(f"{label} seed {seed}: finished already ({run_dir})")
            else:
                resume = (run_dir / "last.pt").exists()
                log(f"{label} seed {seed}: {'resuming' if resume else 'training'} in {run_dir}")
                result = fit(config.run_config(label, seed), resume=resume)
                if result.stopped == "interrupted":
                    raise KeyboardInterrupt(f"interrupted; rerun the comparison to resume {run_dir}")
            rows.append(run_row(label, seed, run_dir, config.base.device, measure))
    return rows


# Settings that change how a run is watched or where it is kept, not what it computes: a run made
# with other values of these still answers the recipe. (Everything else counts, the device too:
# it changes speed, memory and rounding.)
NOT_RESULT_SETTINGS = frozenset({"log.run_dir", "log.progress", "log.tensorboard", "log.checkpoint_every",
                                 "log.log_every", "data.num_workers"})
_NOT_SET = object()


def changed_runs(config: CompareConfig) -> dict:
    """(label, seed) -> the recipe changes (``"optim.lr: 0.001 -> 0.0005"``) of every existing run
    (finished or interrupted) whose ``config.yaml`` differs from the recipe it would be run with now."""
    import yaml

    changed = {}
    for label in config.models:
        for seed in config.seeds:
            run_dir = config.run_dir(label, seed)
            if not _has_run(run_dir):
                continue
            stored = run_dir / "config.yaml"
            if not stored.exists():
                changed[(label, seed)] = ["no config.yaml (the recipe that made it is unknown)"]
                continue
            changes = recipe_changes(yaml.safe_load(stored.read_text()) or {}, config.run_config(label, seed))
            if changes:
                changed[(label, seed)] = changes
    return changed


def _has_run(run_dir: Path) -> bool:
    """Whether a run was made in ``run_dir``: finished (test metrics) or interrupted (a last checkpoint)."""
    return (run_dir / "test_metrics.json").exists() or (run_dir / "last.pt").exists()


def recipe_changes(stored: dict, current: TrainConfig) -> list[str]:
    """``"key: old -> new"`` for every setting in which a run's stored recipe (its ``config.yaml``)
    differs from ``current``; defaults are filled in on both sides (a model option left out equals
    its default) and `NOT_RESULT_SETTINGS` are left out."""
    old, new = _flat(_resolved(stored)), _flat(_resolved(current.to_dict()))
    changes = []
    for key in dict.fromkeys([*new, *old]):
        before, after = old.get(key, _NOT_SET), new.get(key, _NOT_SET)
        if key not in NOT_RESULT_SETTINGS and before != after:
            changes.append(f"{key}: {_shown(before)} -> {_shown(after)}")
    return changes


def _resolved(mapping: dict) -> dict:
    """A stored or current recipe with every default filled in, model options included."""
    from geognn.models import MODELS

    try:
        mapping = from_dict(TrainConfig, mapping).to_dict()
    except (ConfigError, TypeError):  # a recipe of an older geognn: compare what it says
        mapping = dict(mapping)
    model = dict(mapping.get("model") or {})
    options = dict(model.get("options") or {})
    model_class = MODELS.get(model.get("name"))
    if model_class is not None:
        defaults = {}
        for item in dataclasses.fields(model_class.Config):
            if item.name == "readout":  # its default is the trainer's choice from the target, not the Config's
                continue
            if item.default is not dataclasses.MISSING:
                defaults[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                defaults[item.name] = item.default_factory()
        options = {**defaults, **options}
    return {**mapping, "model": {**model, "options": options}}


def _flat(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _shown(value) -> str:
    if value is _NOT_SET:
        return "(not set)"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _changed_message(config: CompareConfig, changed: dict) -> str:
    """One line: which settings changed for which runs, and the two ways on."""
    runs_of = {}
    for run, changes in changed.items():
        for change in changes:
            runs_of.setdefault(change, []).append(run)
    existing = [(label, seed) for label in config.models for seed in config.seeds
                if _has_run(config.run_dir(label, seed))]

    def which(runs):
        if runs == existing and len(existing) > 1:
            return "every run"
        labels = dict.fromkeys(label for label, _ in runs)
        return ", ".join(
            label if [seed for lab, seed in runs if lab == label] == list(config.seeds)
            else f"{label} seed {'/'.join(str(seed) for lab, seed in runs if lab == label)}"
            for label in labels)

    what = "; ".join(f"{change} ({which(runs)})" for change, runs in runs_of.items())
    return (f"{len(changed)} run(s) in {config.base.log.run_dir} were made under another recipe: {what}; "
            "to keep them, give the comparison a new folder with --run-dir; to train them again, "
            "pass --rerun-changed (Python: rerun_changed=True; the old folders are kept as seedS.replaced-N)")


def _move_aside(run_dir: Path) -> Path:
    """Rename a run folder to the first free ``NAME.replaced-N`` beside it, never deleting anything."""
    number = 1
    while (target := run_dir.with_name(f"{run_dir.name}.replaced-{number}")).exists():
        number += 1
    run_dir.rename(target)
    return target


def run_row(label: str, seed: int, run_dir: Path, device: str, measure: bool) -> dict:
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    log_rows = read_log(run_dir)
    wall = max((row["wall_s"] for row in log_rows if row.get("wall_s") is not None), default=float("nan"))
    row = {
        "model": label,
        "seed": seed,
        "parameters": info["parameters"],
        "unit": metrics.get("unit", "eV"),
        "energy_mae": metrics["energy_mae"],
        "forces_mae": metrics.get("forces_mae"),
        "train_s": wall,
        "steps": max((row["step"] for row in log_rows), default=0),
        "best_step": metrics["step"],
        "run_dir": str(run_dir),
    }
    measured_path = run_dir / "measured.json"
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else None
    threads = torch.get_num_threads()
    if measured is not None and measured.get("method") != measure_method(threads):
        measured = None  # measured another way (an older geognn, other threads): not comparable
    if measure and measured is None:
        measured = measure_in_subprocess(run_dir / "best.pt", device, threads)
        measured_path.write_text(json.dumps(measured, indent=2))
    if measured is not None:
        row.update(measured)
    return row


# How `measure_inference` measures, stored with each measurement so that a leaderboard never mixes
# numbers measured in different ways (a run measured otherwise is measured again).
MEASURE_METHOD = ("fresh process, glibc malloc thresholds fixed, {threads} torch thread(s); peak memory above the "
                  "loaded model and data from the first prediction on; throughput best of 3 passes after a warm-up")


def measure_method(threads: int) -> str:
    return MEASURE_METHOD.format(threads=threads)


def measure_in_subprocess(checkpoint: Path, device: str, threads: Optional[int] = None) -> dict:
    """Inference throughput and peak memory of a checkpoint on its test split, in a fresh process
    with ``threads`` torch threads (default: this process's)."""
    threads = threads or torch.get_num_threads()
    command = [sys.executable, "-m", "geognn.training.compare", "--measure", str(checkpoint), "--device", device,
               "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {checkpoint} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_inference(checkpoint: Union[str, Path], device: str = "auto", repeats: int = 3) -> dict:
    """Structures per second predicted (energies, and forces for force-trained models) on the test
    split, best of ``repeats`` passes after a warm-up batch, and the peak memory of predicting,
    warm-up included, above what the loaded model and data hold (CUDA: memory allocated by torch;
    CPU: the resident set, where Linux lets its peak be reset, else the process's whole peak).

    The peak is taken from the first prediction on, after a garbage collection: measured after the
    warm-up instead, it counts only what the warm-up's freed memory did not cover, which varied
    with the allocator's state (35 vs 88 MB for two seeds of one model). `_main` (the fresh
    process of `measure_in_subprocess`) also fixes glibc's malloc thresholds, as the ``geognn``
    command does, so the allocator does not adapt them as it goes."""
    from torch_geometric.loader import DataLoader

    from geognn._checks import resolve_device
    from geognn.models import load_checkpoint, model_from_checkpoint
    from geognn.training.evaluate import _dataset_for

    checkpoint = load_checkpoint(checkpoint)
    device = resolve_device(device)
    model = model_from_checkpoint(checkpoint, device=device).requires_grad_(False)
    dataset, _, _ = _dataset_for(checkpoint, None, "test", model.dtype)
    train = from_dict(TrainConfig, checkpoint["train_config"])
    forces = train.loss.forces_weight > 0 and model.uses_positions
    batches = [batch.to(device) for batch in DataLoader(dataset, batch_size=train.data.batch_size)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_mb = torch.cuda.memory_allocated(device) / 2**20
    else:
        start_mb = _reset_peak_rss()
    model(batches[0], compute_forces=forces)
    sync()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            model(batch, compute_forces=forces)
        sync()
        best = min(best, time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 - start_mb
    else:
        peak_mb = _peak_rss_mb(start_mb)
    return {"inference_per_s": len(dataset) / best, "peak_memory_mb": peak_mb, "device": str(device),
            "method": measure_method(torch.get_num_threads())}


def _status_mb(field_name: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> Optional[float]:
    """Reset Linux's peak-resident mark (VmHWM) to the current resident set and return that, or None.

    (getrusage's ru_maxrss cannot be reset and even keeps the parent's peak across fork and exec.)"""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def _peak_rss_mb(start: Optional[float]) -> float:
    """Peak resident memory since `_reset_peak_rss` above its ``start``; the whole process's otherwise."""
    peak = _status_mb("VmHWM")
    if peak is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - start if start is not None else peak


# ------------------------------------------------------------------------------------ leaderboard


def summarize(rows: list[dict]) -> list[dict]:
    """One line per model, best first: the mean (and sample std) over its seeds of the test MAEs,
    training time and throughput, and the median of the peak memory (robust to one run's
    allocator having kept more)."""
    summary = []
    for label in dict.fromkeys(row["model"] for row in rows):
        runs = [row for row in rows if row["model"] == label]
        maes = [row["energy_mae"] for row in runs]
        forces = [row["forces_mae"] for row in runs if row.get("forces_mae") is not None]
        summary.append({
            "model": label,
            "parameters": runs[0]["parameters"],
            "seeds": len(runs),
            "unit": runs[0]["unit"],
            "energy_mae": _mean(maes),
            "energy_mae_std": _std(maes),
            "forces_mae": _mean(forces) if forces else None,
            "forces_mae_std": _std(forces) if forces else None,
            "train_s": _mean([row["train_s"] for row in runs]),
            "inference_per_s": _mean([row.get("inference_per_s", math.nan) for row in runs]),
            "peak_memory_mb": _median([row.get("peak_memory_mb", math.nan) for row in runs]),
        })
    key = "forces_mae" if all(s["forces_mae"] is not None for s in summary) else "energy_mae"
    return sorted(summary, key=lambda s: s[key])


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


def write_leaderboard(rows: list[dict], out: Union[str, Path]) -> list[Path]:
    """``leaderboard.md``, ``leaderboard.csv`` (one line per run) and ``leaderboard.png``."""
    out = Path(out)
    summary = summarize(rows)
    unit = summary[0]["unit"]
    _, shown = _scaled(0.0, unit)
    with_forces = all(s["forces_mae"] is not None for s in summary)
    header = ["rank", "model", "parameters", f"test MAE ({shown})"]
    if with_forces:
        header.append(f"test force MAE ({shown}/Å)")
    header += ["training time (s)", "inference (structures/s)", "peak memory (MB, median)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |"]
    for rank, s in enumerate(summary, 1):
        mae, _ = _scaled(s["energy_mae"], unit)
        std, _ = _scaled(s["energy_mae_std"], unit)
        cells = [str(rank), s["model"], f"{s['parameters']:,}", _pm(mae, std)]
        if with_forces:
            fmae, _ = _scaled(s["forces_mae"], unit)
            fstd, _ = _scaled(s["forces_mae_std"], unit)
            cells.append(_pm(fmae, fstd))
        cells += [f"{s['train_s']:.0f}", f"{s['inference_per_s']:.0f}", f"{s['peak_memory_mb']:.0f}", str(s["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    md = out / "leaderboard.md"
    md.write_text("\n".join(lines) + "\n")
    table = out / "leaderboard.csv"
    fields = ["model", "seed", "parameters", "unit", "energy_mae", "forces_mae", "train_s", "steps", "best_step",
              "inference_per_s", "peak_memory_mb", "device", "run_dir"]
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return [md, table, _plot(rows, out / "leaderboard.png", unit)]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


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


def compare(config: Union[CompareConfig, str, Path], measure: bool = True, log=print,
            rerun_changed: bool = False) -> tuple[list[dict], list[Path]]:
    """Run (or finish) a comparison and write its leaderboard; returns the rows and the files.

    ``rerun_changed``: a run made under another recipe is moved aside and trained again (without
    it, such a run is refused with a `FileExistsError` naming what changed)."""
    if not isinstance(config, CompareConfig):
        config = load_compare(config)
    rows = run_all(config, measure=measure, log=log, rerun_changed=rerun_changed)
    return rows, write_leaderboard(rows, config.base.log.run_dir)


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="measure a checkpoint's inference (used by geognn compare)")
    parser.add_argument("--measure", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    from geognn._malloc import keep_freed_memory

    keep_freed_memory()  # fixed thresholds, as in the geognn command that trained the model
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_inference(args.measure, args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())


__all__ = ["CompareConfig", "parse_compare", "load_compare", "compare", "run_all", "write_leaderboard",
           "summarize", "measure_inference", "changed_runs", "recipe_changes", "NOT_RESULT_SETTINGS"]
