"""Equal-budget hyperparameter search for `geognn compare`, driven by Optuna.

A comparison recipe with a top-level ``search:`` section gives every model the same number of
trials and the same per-trial budget; each model's ``search:`` mapping says what may vary::

    search: {trials: 20, optim: {max_epochs: 10}, seed: 0, pruning: true, startup_trials: 5}
    models:
      egnn:
        hidden_channels: 64                                # fixed options, as without a search
        search:
          optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true} # a float range (log-uniform)
          hidden_channels: [32, 64, 128]                   # choices
          num_layers: {low: 2, high: 5}                    # an integer range
          cutoff: {low: 4.0, high: 6.0}

A bare name is a model option; ``optim.*`` and ``data.batch_size`` are recipe settings (the loss
and the split are not: they define the objective and the validation set). Each trial is a normal
run folder ``RUN_DIR/search/LABEL/trial-N`` trained with the comparison's first seed under the
recipe, the ``search.optim`` budget and the trial's values, and never tested: the objective is
the lowest validation loss, and the test split stays unseen. Optuna's TPE sampler proposes the
values (random for the first ``startup_trials``); with ``pruning`` its median pruner stops a
trial whose validation loss is worse than the median of earlier trials at the same step.

The studies live in ``RUN_DIR/search.db`` (SQLite through Optuna's own storage, one study per
model). Rerunning resumes: finished trials are kept, an interrupted trial continues from its
``last.pt`` (Optuna records it as failed and queues its values again, for the same folder), and
only the trials still missing run. (The sampler is seeded with ``seed`` plus the number of
trials so far, so a resumed search proposes other values than an uninterrupted one would have.)
A study made under another search (space, budget, recipe) is refused, naming what changed,
unless ``rerun_changed`` moves it aside. A diverged trial counts as a failed trial of the budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geognn.training.config import ConfigError, DataSection, OptimSection, TrainConfig, from_dict

if TYPE_CHECKING:
    from geognn.training.compare import CompareConfig


@dataclass
class SearchSettings:
    """The budget every model's search gets (the recipe's top-level ``search:`` section)."""

    trials: int = 20
    optim: dict = field(default_factory=dict)  # per-trial budget: optim settings such as max_epochs
    seed: int = 0
    pruning: bool = True
    startup_trials: int = 5

    def __post_init__(self):
        if self.trials < 1:
            raise ConfigError(f"search.trials must be at least 1, got {self.trials}")
        if self.startup_trials < 0:
            raise ConfigError(f"search.startup_trials must be non-negative, got {self.startup_trials}")
        try:
            from_dict(OptimSection, self.optim, "search.optim")
        except TypeError as err:
            raise ConfigError(f"search.optim: {err}") from None


RECIPE_KEYS = {"optim": {f.name for f in dataclasses.fields(OptimSection)}, "data": {"batch_size"}}


def parse_space(label: str, model_name: str, mapping) -> dict:
    """A model's search space (name -> choices list or ``{low, high, log, step}``), every name and
    range checked."""
    from geognn.models import MODELS

    where = f"models.{label}.search"
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"{where}: expected a mapping from options to ranges or choices, got {mapping!r}")
    options = {f.name for f in dataclasses.fields(MODELS[model_name].Config)}
    space = {}
    for name, spec in mapping.items():
        section, _, key = str(name).rpartition(".")
        if section and (section not in RECIPE_KEYS or key not in RECIPE_KEYS[section]):
            allowed = ", ".join(f"{s}.{k}" for s in RECIPE_KEYS for k in sorted(RECIPE_KEYS[s]))
            raise ConfigError(f"{where}.{name}: only model options and {allowed} can be searched "
                              "(the loss and the split define the objective and the validation set)")
        if not section and name not in options:
            raise ConfigError(f"{where}.{name}: {model_name} has no option {name!r}; options: {', '.join(sorted(options))}")
        space[str(name)] = _spec(spec, f"{where}.{name}")
        target = {"optim": OptimSection, "data": DataSection}.get(section, MODELS[model_name].Config)
        for value in space[name] if isinstance(space[name], list) else (space[name]["low"], space[name]["high"]):
            try:  # every choice and both ends of a range, as the recipe would take them
                from_dict(target, {key: value}, f"{where}.{name}")
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}.{name}: {value!r} is not a valid value ({err})") from None
    return space


def _number(value, where: str):
    if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def _spec(spec, where: str):
    if isinstance(spec, list):
        if not spec or not all(value is None or isinstance(value, (bool, int, float, str)) for value in spec):
            raise ConfigError(f"{where}: choices must be a non-empty list of numbers, strings, booleans or null")
        return list(spec)
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log", "step"}:
        raise ConfigError(f"{where}: give a list of choices or a range {{low, high, log, step}}, got {spec!r}")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    step = None if spec.get("step") is None else _number(spec["step"], f"{where}.step")
    log = bool(spec.get("log", False))
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs a positive low, got {low}")
    if log and step is not None:
        raise ConfigError(f"{where}: give log or step, not both")
    kind = "int" if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)) else "float"
    return {"low": low, "high": high, "log": log, "step": step, "kind": kind}


def suggest(trial, space: dict) -> dict:
    """The trial's values for every name in ``space``."""
    values = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            values[name] = trial.suggest_categorical(name, spec)
        elif spec["kind"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), step=spec["step"],
                                               log=spec["log"])
    return values


def first_values(space: dict) -> dict:
    """One value per name (first choice, low end): to check a space against the recipe before searching."""
    return {name: spec[0] if isinstance(spec, list) else spec["low"] for name, spec in space.items()}


def with_values(config: TrainConfig, values: dict) -> TrainConfig:
    """``config`` with searched values set: bare names are model options, dotted ones recipe settings."""
    mapping = config.to_dict()
    for name, value in values.items():
        section, _, key = name.rpartition(".")
        if section:
            mapping[section][key] = value
        else:
            mapping["model"]["options"][name] = value
    return from_dict(TrainConfig, mapping)


# ----------------------------------------------------------------------------------- the search


def study_path(config: "CompareConfig") -> Path:
    return Path(config.base.log.run_dir) / "search.db"


def _storage(config: "CompareConfig"):
    import optuna

    path = study_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")


def trial_config(config: "CompareConfig", label: str, values: dict, run_dir: Path) -> TrainConfig:
    """The recipe of one trial: the model's run at the largest training size and first seed, the
    search's per-trial budget, the trial's values."""
    base = config.run_config(label, config.seeds[0], config.largest_size(), tuned=False)
    budget = from_dict(OptimSection, {**dataclasses.asdict(base.optim), **config.search.optim}, "search.optim")
    base = dataclasses.replace(base, optim=budget, log=dataclasses.replace(base.log, run_dir=str(run_dir)))
    return with_values(base, values)


def _signature(config: "CompareConfig", label: str) -> dict:
    """What makes two searches of a model the same search (the trial count may grow)."""
    recipe = trial_config(config, label, {}, Path(".")).to_dict()
    recipe.pop("log")  # where and how often it logs does not change what a trial computes
    recipe["data"].pop("num_workers")
    settings = {k: v for k, v in dataclasses.asdict(config.search).items() if k != "trials"}
    return json.loads(json.dumps({"space": config.spaces[label], "settings": settings, "recipe": recipe}))


def _counted(trial) -> bool:
    """Trials that used up one of the budget's: finished, pruned, or failed by diverging."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "diverged" in trial.user_attrs)


class _Pruning:
    """Trainer callback: report each validation loss to the trial; stop the run when Optuna prunes it."""

    def __init__(self, trial, enabled: bool):
        self.trial, self.enabled, self.reported = trial, enabled, -1

    def __call__(self, trainer) -> None:
        if trainer.last_eval_step != trainer.step or trainer.step == self.reported:
            return
        self.reported = trainer.step
        self.trial.report(float(trainer.val_metrics["loss"]), trainer.step)
        if self.enabled and self.trial.should_prune():
            trainer.request_stop("pruned")


def best_val_loss(run_dir: Path) -> float:
    from geognn.training.runlog import read_log

    losses = [row["loss"] for row in read_log(run_dir) if row.get("split") == "val" and row.get("loss") is not None]
    return min(losses) if losses else math.nan


def search_model(config: "CompareConfig", label: str, log=print, rerun_changed: bool = False) -> dict:
    """Run (or finish) the search of one model; returns ``{"values", "value", "trial"}`` of its best trial.

    Raises:
        FileExistsError: the stored study was made under another search and ``rerun_changed`` is False.
        KeyboardInterrupt: a trial was interrupted (rerun to resume it).
    """
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        raise ImportError("a comparison with a search: section needs Optuna: pip install \"geognn[compare]\"") from None

    from geognn.training.trainer import TrainingDiverged, fit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings, space = config.search, config.spaces[label]
    folder = Path(config.base.log.run_dir) / "search" / label
    storage = _storage(config)
    signature = _signature(config, label)
    if label in optuna.get_all_study_names(storage):
        stored = optuna.load_study(study_name=label, storage=storage).user_attrs.get("signature")
        if stored != signature:
            from geognn.training.compare import _flat

            old, new = _flat(stored or {}), _flat(signature)
            changes = [key for key in dict.fromkeys([*new, *old]) if old.get(key) != new.get(key)]
            if not rerun_changed:
                raise FileExistsError(
                    f"the search of {label} in {study_path(config)} was made under another search "
                    f"({', '.join(changes[:6])}{', ...' if len(changes) > 6 else ''} changed); give the comparison a "
                    "new folder with --run-dir, or pass --rerun-changed to keep it as LABEL.replaced-N and search again")
            number = 1
            while f"{label}.replaced-{number}" in optuna.get_all_study_names(storage):
                number += 1
            optuna.copy_study(from_study_name=label, from_storage=storage, to_storage=storage,
                              to_study_name=f"{label}.replaced-{number}")
            optuna.delete_study(study_name=label, storage=storage)
            if folder.exists():
                folder.rename(folder.with_name(f"{label}.replaced-{number}"))
            log(f"{label}: search made under another search; kept as {label}.replaced-{number}, searching again")
    study = optuna.create_study(study_name=label, storage=storage, load_if_exists=True, direction="minimize")
    study.set_user_attr("signature", signature)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # interrupted: go on in its folder
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"run_dir": trial.user_attrs.get("run_dir"),
                                                      "resumes": trial.number})
    done = sum(_counted(trial) for trial in study.get_trials(deepcopy=False))
    if done < settings.trials:
        sampler = optuna.samplers.TPESampler(seed=settings.seed + len(study.trials),
                                             n_startup_trials=settings.startup_trials)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials) if settings.pruning
                  else optuna.pruners.NopPruner())
        study = optuna.load_study(study_name=label, storage=storage, sampler=sampler, pruner=pruner)
    while done < settings.trials:
        trial = study.ask()
        run_dir = Path(trial.user_attrs.get("run_dir") or folder / f"trial-{trial.number}")
        trial.set_user_attr("run_dir", str(run_dir))
        values = suggest(trial, space)
        resume = (run_dir / "last.pt").exists()
        log(f"{label}: search trial {done + 1}/{settings.trials} ({'resuming ' if resume else ''}{run_dir.name}): "
            + ", ".join(f"{name}={_shown(value)}" for name, value in values.items()))
        try:
            result = fit(trial_config(config, label, values, run_dir), resume=resume,
                         callbacks=[_Pruning(trial, settings.pruning)], test=False)
        except TrainingDiverged as err:
            trial.set_user_attr("diverged", str(err).splitlines()[0][:300])
            study.tell(trial, state=TrialState.FAIL)
            done += 1
            continue
        if result.stopped == "interrupted":
            raise KeyboardInterrupt(f"interrupted; rerun the comparison to resume the search in {run_dir}")
        if result.stopped == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, best_val_loss(run_dir))
        done += 1
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not finished:
        raise RuntimeError(f"the search of {label} has no finished trial (all pruned or diverged); "
                           "widen its ranges or give search.trials more")
    best = min(finished, key=lambda t: t.value)
    result = {"values": dict(best.params), "value": best.value, "trial": best.number,
              "run_dir": best.user_attrs.get("run_dir")}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.json").write_text(json.dumps(result, indent=2))
    return result


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def search_all(config: "CompareConfig", log=print, rerun_changed: bool = False) -> dict:
    """Search every model with a search space; returns label -> best (see `search_model`)."""
    return {label: search_model(config, label, log, rerun_changed) for label in config.spaces}


def history(config: "CompareConfig") -> dict:
    """label -> the trials of its stored study: ``[(number, state, value or None)]`` in order."""
    import optuna

    storage = _storage(config)
    names = set(optuna.get_all_study_names(storage))
    out = {}
    for label in config.spaces:
        if label in names:
            trials = optuna.load_study(study_name=label, storage=storage).get_trials(deepcopy=False)
            out[label] = [(t.number, t.state.name.lower(), t.value) for t in trials]
    return out


def plot_history(trials_of: dict, path: Path) -> Path:
    """``search_history.png``: each finished trial's best validation loss, and the best so far,
    against the trial's place in its model's search."""
    from geognn.training.plots import _pyplot, _save, plain_log_axis

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for k, (label, trials) in enumerate(trials_of.items()):
        counted = [(state, value) for _, state, value in trials if state != "fail" or value is not None]
        x = [i + 1 for i, (state, value) in enumerate(counted) if state == "complete"]
        y = [value for state, value in counted if state == "complete"]
        best, running = math.inf, []
        for state, value in counted:
            best = min(best, value) if state == "complete" else best
            running.append(best if best < math.inf else math.nan)
        color = f"C{k % 10}"
        axis.scatter(x, y, color=color, s=16, alpha=0.5)
        axis.step(range(1, len(running) + 1), running, where="post", color=color, label=label)
    axis.set_xlabel("trial")
    axis.set_ylabel("validation loss (lowest of the trial)")
    values = [value for trials in trials_of.values() for _, state, value in trials if state == "complete"]
    if values:
        plain_log_axis(axis.yaxis, values)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(plt, figure, "hyperparameter search: each finished trial and the best so far", path)


__all__ = ["SearchSettings", "parse_space", "suggest", "with_values", "trial_config", "search_model", "search_all",
           "history", "plot_history", "best_val_loss", "study_path"]
