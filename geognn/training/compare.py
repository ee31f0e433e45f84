"""`geognn compare`: several models trained under identical conditions, and a leaderboard.

A comparison recipe is a training recipe whose ``model`` section is replaced by ``models`` (label
-> options) and which adds ``seeds``::

    models:
      egnn: {hidden_channels: 64, num_layers: 4}          # label = a name in MODELS: its options
      schnet: {}
      egnn-wide: {name: egnn, options: {hidden_channels: 128}}   # any label: name + options
      painn-slow: {name: painn, options: {}, optim: {lr: 5.0e-4}}   # + this model's own optim settings
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

Optional keys: ``train_sizes`` (a learning curve: every model × size × seed, runs in
``RUN_DIR/LABEL/nN/seedS`` training on the first n structures of the split's training part, the
budget per size by ``size_budget``: ``epochs`` or ``steps``), ``search`` with per-model
``search:`` spaces (`geognn.training.search`: an equal-budget Optuna search whose best values
every run then trains with), ``rank_by`` (``energy_mae`` or ``forces_mae``, the default when
forces are trained), ``bootstrap_samples``, ``models.LABEL.optim`` (settings of that model's
optimizer, e.g. a learning rate it needs; everything else stays shared) and ``materials``
(crystal physics of every model against a reference potential: `geognn.training.physics`). Models that cannot give the trained forces are
left out with the reason.

The report (`geognn.training.report`: ``report.md``, ``leaderboard.md``, ``.csv``, ``.png``,
``learning_curve.png``, ``search_history.png`` in ``RUN_DIR``) lists per model the parameters,
the test MAE (mean ± std over seeds), the training time (wall clock and CPU), inference throughput
(mean over seeds) and peak memory (median over seeds), with paired bootstrap statistics between the models on
their per-structure test errors. Throughput and memory are measured after
training in a fresh process per run (``python -m geognn.training.compare --measure CHECKPOINT``)
the same way every time (`MEASURE_METHOD`, stored in ``measured.json``; a run measured another
way is measured again). Budgets given in epochs or steps reproduce the same numbers on a rerun
with the same seeds; a ``max_minutes`` budget depends on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

import torch

from geognn.training.config import ConfigError, ModelSection, TrainConfig, from_dict
from geognn.training.report import summarize, write_leaderboard, write_report, write_structure_errors
from geognn.training.runlog import read_log


SIZE_BUDGETS = ("epochs", "steps")
RANK_METRICS = ("energy_mae", "forces_mae")


@dataclass
class CompareConfig:
    """A comparison: the shared training recipe, the models (label -> `ModelSection`) and the seeds;
    optionally training-set sizes (a learning curve), search spaces (label -> `parse_space`) with
    their shared `SearchSettings`, and what the report ranks by.

    ``tuned`` holds the searched values each model trains with (label -> values; set by `compare`
    from the search's best trials), ``left_out`` the models refused with the reason."""

    base: TrainConfig
    models: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])
    train_sizes: Optional[list] = None
    size_budget: str = "epochs"
    rank_by: Optional[str] = None
    bootstrap_samples: int = 10000
    search: Optional[object] = None  # SearchSettings
    spaces: dict = field(default_factory=dict)
    tuned: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)  # label -> optim settings of that model only (models.LABEL.optim)
    materials: Optional[object] = None  # MaterialsSettings: crystal physics against a reference potential

    def largest_size(self) -> Optional[int]:
        return max(self.train_sizes) if self.train_sizes else None

    def sizes(self) -> list:
        """The training-set sizes run, smallest first ([None]: the recipe's whole training split)."""
        return sorted(self.train_sizes) if self.train_sizes else [None]

    def runs(self) -> list[tuple]:
        """Every (label, seed, size) of the comparison, in training order."""
        return [(label, seed, size) for label in self.models for size in self.sizes() for seed in self.seeds]

    def run_dir(self, label: str, seed: int, size: Optional[int] = None) -> Path:
        folder = Path(self.base.log.run_dir) / label
        return (folder if size is None else folder / f"n{size}") / f"seed{seed}"

    def run_config(self, label: str, seed: int, size: Optional[int] = None, tuned: bool = True) -> TrainConfig:
        """The recipe of one run: the shared one with this model, seed and training-set size (its
        budget per `size_budget`) and, unless ``tuned`` is False, the model's searched values."""
        log = replace(self.base.log, run_dir=str(self.run_dir(label, seed, size)))
        config = replace(self.base, model=self.models[label], seed=seed, log=log)
        if self.optim.get(label):
            config = replace(config, optim=replace(config.optim, **self.optim[label]))
        if size is not None:
            optim = config.optim
            if self.size_budget == "steps":  # the same optimizer steps at every size
                optim = replace(optim, max_epochs=10**9)
            config = replace(config, data=replace(config.data, train_size=size), optim=optim)
        if tuned and self.tuned.get(label):
            from geognn.training.search import with_values

            config = with_values(config, self.tuned[label])
        return config

    def metric(self) -> str:
        """What the report ranks by: ``rank_by``, else force MAE when forces are trained."""
        if self.rank_by is not None:
            return self.rank_by
        return "forces_mae" if self.base.loss.forces_weight > 0 else "energy_mae"


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
    train_sizes = mapping.pop("train_sizes", None)
    size_budget = mapping.pop("size_budget", "epochs")
    rank_by = mapping.pop("rank_by", None)
    bootstrap_samples = mapping.pop("bootstrap_samples", 10000)
    search_raw = mapping.pop("search", None)
    materials_raw = mapping.pop("materials", None)
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError("models: give a mapping from labels (names in MODELS) to their options")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {seeds} repeats a seed")
    if train_sizes is not None and (not isinstance(train_sizes, list) or not train_sizes or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in train_sizes)):
        raise ConfigError(f"train_sizes: expected a non-empty list of positive structure counts, got {train_sizes!r}")
    if train_sizes is not None and len(set(train_sizes)) != len(train_sizes):
        raise ConfigError(f"train_sizes: {train_sizes} repeats a size")
    if size_budget not in SIZE_BUDGETS:
        raise ConfigError(f"size_budget must be epochs (optim.max_epochs at every size) or steps (optim.max_steps "
                          f"at every size); got {size_budget!r}")
    if rank_by is not None and rank_by not in RANK_METRICS:
        raise ConfigError(f"rank_by must be one of {', '.join(RANK_METRICS)}; got {rank_by!r}")
    if not isinstance(bootstrap_samples, int) or bootstrap_samples < 100:
        raise ConfigError(f"bootstrap_samples: expected an integer of at least 100, got {bootstrap_samples!r}")
    models, spaces_raw, optim = {}, {}, {}
    for label, value in models_raw.items():
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise ConfigError(f"models.{label}: expected a mapping of options, got {value!r}")
        if "search" in value:
            value = dict(value)
            spaces_raw[str(label)] = value.pop("search")
        if "optim" in value:  # this model's own optimizer settings (no model has an option of that name)
            value = dict(value)
            optim[str(label)] = value.pop("optim")
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
    if train_sizes is not None and size_budget == "epochs" and base.optim.max_steps is not None:
        raise ConfigError("size_budget: epochs trains optim.max_epochs at every training-set size; remove "
                          "optim.max_steps, or set size_budget: steps")
    if train_sizes is not None and size_budget == "steps" and base.optim.max_steps is None:
        raise ConfigError("size_budget: steps trains optim.max_steps at every training-set size; set optim.max_steps")
    if rank_by == "forces_mae" and base.loss.forces_weight == 0:
        raise ConfigError("rank_by: forces_mae needs force training (loss.forces_weight > 0)")
    for label, settings in optim.items():
        if not isinstance(settings, dict) or not settings:
            raise ConfigError(f"models.{label}.optim: expected a mapping of optim settings, got {settings!r}")
        from_dict(type(base.optim), {**dataclasses.asdict(base.optim), **settings}, f"models.{label}.optim")
    materials = None
    if materials_raw is not None:
        from geognn.training.physics import MaterialsSettings

        materials = from_dict(MaterialsSettings, materials_raw, "materials")
    config = CompareConfig(base, models, list(seeds), train_sizes=train_sizes, size_budget=size_budget,
                           rank_by=rank_by, bootstrap_samples=bootstrap_samples, optim=optim, materials=materials)
    return _with_search(config, search_raw, spaces_raw)


def _with_search(config: CompareConfig, search_raw, spaces_raw: dict) -> CompareConfig:
    """The comparison with its search settings and spaces, each space checked against the recipe."""
    from geognn.training.search import SearchSettings, first_values, parse_space, with_values

    if search_raw is None and not spaces_raw:
        return config
    if search_raw is None:
        raise ConfigError(f"models.{next(iter(spaces_raw))}.search: a search space needs the top-level 'search:' "
                          "section (trials and per-trial budget, the same for every model)")
    settings = from_dict(SearchSettings, search_raw, "search")
    if not spaces_raw:
        raise ConfigError("search: no model has a search space; give models.LABEL.search (options -> ranges or choices)")
    spaces = {label: parse_space(label, config.models[label].name, raw) for label, raw in spaces_raw.items()}
    for label, space in spaces.items():
        try:
            with_values(config.run_config(label, config.seeds[0]), first_values(space))
        except ConfigError as err:
            raise ConfigError(f"models.{label}.search: {err}") from None
    return replace(config, search=settings, spaces=spaces)


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
    """Train every (model, size, seed) not finished yet, measure it, and return one row per run
    (runs at the largest training-set size are measured; the smaller sizes only give errors).

    Raises:
        FileExistsError: a run folder holds a run made under another recipe and ``rerun_changed``
            is False; the message names the settings that changed.
    """
    from geognn.training.trainer import check_model_and_loss, fit

    for label in config.models:  # refuse a bad combination before any training starts
        check_model_and_loss(config.run_config(label, config.seeds[0]))
    if config.train_sizes:
        check_train_sizes(config)
    changed = changed_runs(config)  # and a folder of another recipe, before anything trains
    if changed and not rerun_changed:
        raise FileExistsError(_changed_message(config, changed))
    for (label, seed, size), changes in changed.items():
        old = _move_aside(config.run_dir(label, seed, size))
        log(f"{_run_name(label, seed, size)}: made under another recipe ({', '.join(changes)}); moved to {old}, "
            "training again")
    rows = []
    for label, seed, size in config.runs():
        run_dir = config.run_dir(label, seed, size)
        if (run_dir / "test_metrics.json").exists():
            log(f"{_run_name(label, seed, size)}: finished already ({run_dir})")
        else:
            resume = (run_dir / "last.pt").exists()
            log(f"{_run_name(label, seed, size)}: {'resuming' if resume else 'training'} in {run_dir}")
            result = fit(config.run_config(label, seed, size), resume=resume)
            if result.stopped == "interrupted":
                raise KeyboardInterrupt(f"interrupted; rerun the comparison to resume {run_dir}")
        row = run_row(label, seed, run_dir, config.base.device, measure and size == config.largest_size())
        rows.append({**row, "train_size": size})
    return rows


def check_train_sizes(config: CompareConfig) -> None:
    """Refuse learning-curve sizes whose training structures lack an element that the validation or
    test structures hold: the model cannot learn that element's energy, and the point would
    measure the missing element, not the architecture (200 random QM9 molecules often hold no F).

    Raises:
        ConfigError: naming the sizes, the elements and the smallest size that holds them all.
    """
    from ase.data import chemical_symbols

    from geognn._checks import FLOAT_DTYPES
    from geognn.training.data import _first_structures, elements, load_splits, smallest_train_size

    section = replace(config.base.data, train_size=None)
    _, parts, _ = load_splits(section, FLOAT_DTYPES[config.base.dtype])
    wanted = elements(parts[1]) | (elements(parts[2]) if len(parts[2]) else set())
    lacking = {}
    for size in config.sizes():
        missing = wanted - elements(_first_structures(parts[0], replace(section, train_size=size)))
        if missing:
            lacking[size] = sorted(missing)
    if not lacking:
        return
    smallest = smallest_train_size(section, parts, wanted)
    named = "; ".join(f"{size} lack {', '.join(chemical_symbols[z] for z in zs)}" for size, zs in lacking.items())
    advice = (f"the smallest size that holds every element is {smallest}" if smallest is not None
              else "even the whole training split lacks one; change the split")
    raise ConfigError(f"train_sizes: the training structures of size(s) {named}, which the validation or test "
                      f"structures hold: a model cannot learn an element it never saw, so those points would "
                      f"measure the missing element, not the model; {advice}")


def _run_name(label: str, seed: int, size: Optional[int]) -> str:
    return f"{label} seed {seed}" if size is None else f"{label} n={size} seed {seed}"


def refusing_forces(config: CompareConfig) -> dict:
    """label -> why, for the models that cannot give the forces (or stress) the recipe trains."""
    from geognn.training.trainer import check_model_and_loss

    refused = {}
    for label in config.models:
        try:
            check_model_and_loss(config.run_config(label, config.seeds[0], tuned=False))
        except ConfigError as err:
            refused[label] = str(err)
    return refused


def without_refusing(config: CompareConfig, log=print) -> CompareConfig:
    """The comparison without the models that refuse the recipe's force (stress) term, each left
    out with its reason (in ``left_out``, and in the report), instead of failing the comparison."""
    refused = refusing_forces(config)
    if not refused:
        return config
    if len(refused) == len(config.models):
        raise ConfigError(f"no model of the comparison can train this loss: {next(iter(refused.values()))}")
    for label, reason in refused.items():
        log(f"{label}: left out ({reason})")
    return replace(config, models={k: v for k, v in config.models.items() if k not in refused},
                   spaces={k: v for k, v in config.spaces.items() if k not in refused},
                   left_out={**config.left_out, **refused})


# Settings that change how a run is watched or where it is kept, not what it computes: a run made
# with other values of these still answers the recipe. (Everything else counts, the device too:
# it changes speed, memory and rounding.)
NOT_RESULT_SETTINGS = frozenset({"log.run_dir", "log.progress", "log.tensorboard", "log.checkpoint_every",
                                 "log.log_every", "data.num_workers"})
_NOT_SET = object()


def changed_runs(config: CompareConfig) -> dict:
    """(label, seed, size) -> the recipe changes (``"optim.lr: 0.001 -> 0.0005"``) of every existing run
    (finished or interrupted) whose ``config.yaml`` differs from the recipe it would be run with now."""
    import yaml

    changed = {}
    for label, seed, size in config.runs():
        run_dir = config.run_dir(label, seed, size)
        if not _has_run(run_dir):
            continue
        stored = run_dir / "config.yaml"
        if not stored.exists():
            changed[(label, seed, size)] = ["no config.yaml (the recipe that made it is unknown)"]
            continue
        changes = recipe_changes(yaml.safe_load(stored.read_text()) or {}, config.run_config(label, seed, size))
        if changes:
            changed[(label, seed, size)] = changes
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
    existing = [run for run in config.runs() if _has_run(config.run_dir(*run))]

    def which(runs):
        if runs == existing and len(existing) > 1:
            return "every run"
        labels = dict.fromkeys(label for label, _, _ in runs)
        every = len(config.seeds) * len(config.sizes())
        return ", ".join(
            label if sum(lab == label for lab, _, _ in runs) == every
            else ", ".join(_run_name(*run) for run in runs if run[0] == label)
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
    wall, cpu = (max((row[key] for row in log_rows if row.get(key) is not None), default=float("nan"))
                 for key in ("wall_s", "cpu_s"))  # runs from before cpu_s was logged: NaN
    row = {
        "model": label,
        "seed": seed,
        "parameters": info["parameters"],
        "unit": metrics.get("unit", "eV"),
        "energy_mae": metrics["energy_mae"],
        "forces_mae": metrics.get("forces_mae"),
        "stress_mae": metrics.get("stress_mae"),
        "train_s": wall,
        "cpu_s": cpu,
        "steps": max((row["step"] for row in log_rows), default=0),
        "best_step": metrics["step"],
        "run_dir": str(run_dir),
    }
    if not (run_dir / "test_errors.csv").exists():
        write_structure_errors(run_dir)  # the per-structure errors the paired statistics use
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


def compare(config: Union[CompareConfig, str, Path], measure: bool = True, log=print,
            rerun_changed: bool = False, only: Optional[list] = None) -> tuple[list[dict], list[Path]]:
    """Run (or finish) a comparison and write its report; returns the rows and the files.

    In order: models that cannot give the trained forces are left out (with the reason, in the
    report); each model's search, if the recipe has one, runs (or resumes) and its best values
    become the model's settings; every run is trained (or resumed); the report is written.

    ``rerun_changed``: a run or search made under another recipe is moved aside and redone
    (without it, such a run is refused with a `FileExistsError` naming what changed).

    ``only``: labels of the models to run (and measure, and whose crystal physics to compute);
    no report is written, as it would lack the others. Separate jobs (one per model, in parallel
    or on a cluster) then leave every run finished, and a call without ``only`` writes the report
    from them."""
    if not isinstance(config, CompareConfig):
        config = load_compare(config)
    if only:
        unknown = [label for label in only if label not in config.models]
        if unknown:
            raise ValueError(f"--only {', '.join(unknown)}: not a model of this recipe (its models: "
                             f"{', '.join(config.models)})")
        config = replace(config, models={label: config.models[label] for label in only})
    config = without_refusing(config, log)
    if config.search is not None:
        from geognn.training.search import search_all

        best = search_all(config, log=log, rerun_changed=rerun_changed)
        config = replace(config, tuned={label: found["values"] for label, found in best.items()})
    rows = run_all(config, measure=measure, log=log, rerun_changed=rerun_changed)
    if config.materials is not None:
        from geognn.training.physics import add_materials

        largest = config.largest_size()
        add_materials(config.materials, [row for row in rows if row.get("train_size") == largest],
                      Path(config.base.log.run_dir), log)
    return rows, ([] if only else write_report(config, rows))


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="measure a checkpoint's inference (used by geognn compare)")
    parser.add_argument("--measure", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    from geognn._malloc import keep_freed_memory

    keep_freed_memory()  # fixed thresholds, as in the geognn command that trained the model
    from geognn._subnormals import flush_subnormals

    flush_subnormals()  # and subnormals flushed, as there
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_inference(args.measure, args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())


__all__ = ["CompareConfig", "parse_compare", "load_compare", "compare", "run_all", "write_leaderboard", "write_report",
           "summarize", "measure_inference", "changed_runs", "recipe_changes", "refusing_forces", "without_refusing",
           "NOT_RESULT_SETTINGS"]
