"""Errors of a model on a dataset: used by the training loop and by `geognn evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from ase.data import chemical_symbols
from torch_geometric.loader import DataLoader

from geognn.data import ASEDataset, keys
from geognn.data.labels import label_counts
from geognn.models.checkpoint import load_checkpoint, model_from_checkpoint
from geognn.training.config import ConfigError, DataSection, TrainConfig, from_dict, load_config
from geognn.training.data import DATASETS, Target, describe, load_splits
from geognn.training.loss import ErrorStats, Loss, prediction_errors

SPLITS = ("train", "val", "test")


@dataclass
class Evaluation:
    """Summed errors (``stats``), per-term loss sums and counts, and optionally the predictions."""

    stats: ErrorStats
    loss_totals: dict
    predictions: Optional[dict] = None


def evaluate_model(model, loader, device, loss: Loss, forward: Optional[Callable] = None,
                   keep_predictions: bool = False) -> Evaluation:
    """Run ``model`` (in eval mode) over ``loader``, accumulating errors of the quantities ``loss`` trains.

    ``forward(model, batch)`` defaults to ``model(batch, compute_forces=..., compute_stress=...)``.
    Predictions, when kept: ``energy``, ``energy_ref`` [M] (float64), ``num_atoms`` [M],
    ``baseline`` [M] (Σ of the model's per-element references), ``forces``, ``forces_ref`` [N, 3].
    """
    if forward is None:
        def forward(model, batch):
            return model(batch, compute_forces=loss.wants_forces, compute_stress=loss.stress_of(batch))
    stats = ErrorStats()
    loss_totals = {name: [0.0, 0] for name in loss.weights}
    kept = {"energy": [], "energy_ref": [], "num_atoms": [], "baseline": [], "forces": [], "forces_ref": []}
    model.eval()
    with torch.no_grad():  # the model enables gradients itself where forces need them
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            out = forward(model, batch)
            errors = prediction_errors(out, batch, loss.wants_forces, loss.wants_stress)
            stats.update(errors)
            for name, (value, count) in loss.sums(errors).items():
                loss_totals[name][0] += float(value)
                loss_totals[name][1] += count
            if keep_predictions:
                z = batch[keys.ATOMIC_NUMBERS]
                baseline = torch.zeros(batch.num_graphs, dtype=torch.float64, device=z.device)
                baseline.index_add_(0, batch.batch, model.atomic_reference[z].double())
                kept["energy"].append(out[keys.ENERGY].detach().double().cpu())
                kept["energy_ref"].append(batch[keys.ENERGY].double().reshape(-1).cpu())
                kept["num_atoms"].append(torch.diff(batch.ptr).cpu())
                kept["baseline"].append(baseline.cpu())
                if loss.wants_forces:
                    kept["forces"].append(out[keys.FORCES].detach().cpu())
                    kept["forces_ref"].append(batch[keys.FORCES].cpu())
    predictions = {key: torch.cat(value) for key, value in kept.items() if value} if keep_predictions else None
    return Evaluation(stats, loss_totals, predictions)


def combined_loss(loss: Loss, loss_totals: dict) -> float:
    return sum(loss.weights[name] * value / max(count, 1) for name, (value, count) in loss_totals.items())


def _dataset_for(checkpoint: dict, data, split: str, dtype: torch.dtype):
    """(dataset, split name, target) for `evaluate_checkpoint`'s ``data`` argument."""
    trained = from_dict(TrainConfig, checkpoint["train_config"])
    norm = checkpoint["normalization"]
    target = Target(norm["target"], norm["unit"], norm["intensive"])
    section: Optional[DataSection] = None
    if data is None:
        section = trained.data
    elif isinstance(data, DataSection):
        section = data
    elif Path(data).suffix in (".yaml", ".yml"):
        section = load_config(data).data
    elif str(data) in DATASETS:
        section = replace(trained.data, dataset=str(data)) if str(data) != trained.data.dataset else trained.data
    if section is None:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"--data {data}: no such file (give a structure file, a recipe .yaml, or qm9)")
        return ASEDataset(path, dtype=dtype), "all", target
    if split not in SPLITS + ("all",):
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} or all; got {split!r}")
    dataset, parts, _ = load_splits(section, dtype)
    if split == "all":
        return dataset, split, target
    chosen = parts[SPLITS.index(split)]
    if len(chosen) == 0:
        raise ConfigError(f"the {split} split of this data is empty; choose another with --split")
    return chosen, split, target


def _data_name(data) -> str:
    """The ``data`` argument of `evaluate_checkpoint` (not None), for messages."""
    if isinstance(data, DataSection):
        return describe(data)
    if Path(data).suffix in (".yaml", ".yml"):
        return f"the data of {data}"
    if str(data) in DATASETS:
        return f"the {data} dataset"
    return str(data)


def _check_data(dataset, checkpoint: dict, data) -> None:
    """Refuse data without reference energies, and (for data other than the run's own) structures with
    elements the model was not trained on, as the ASE calculator does: their energies would be a guess."""
    name = "the run's data" if data is None else _data_name(data)
    if len(dataset) == 0:
        raise ValueError(f"{name} holds no structures to evaluate on")
    if keys.ENERGY not in dataset[0]:
        raise ValueError(f"{name} has no 'energy' labels to compare the model's predictions with; give structures "
                         "with reference energies (extxyz: energy=... on each frame's comment line), or predict "
                         "without references with geognn.calculator.GeoGNNCalculator")
    trained = checkpoint["normalization"].get("elements")
    if data is None or not trained:  # the run's own split, or a checkpoint from before the elements were kept
        return
    present = set()
    for batch in DataLoader(dataset, batch_size=1024):
        present.update(torch.unique(batch[keys.ATOMIC_NUMBERS]).tolist())
    unknown = sorted(present - set(trained))
    if unknown:
        raise ValueError(
            f"{name} contains {', '.join(chemical_symbols[z] for z in unknown)}, which this model was not trained on "
            f"(it knows {', '.join(chemical_symbols[z] for z in sorted(trained))}); its energies there would be a "
            "guess, so evaluate it on structures of those elements only"
        )


def evaluate_checkpoint(checkpoint: Union[str, Path, dict], data=None, split: str = "test", device="cpu",
                        batch_size: int = 64, forces: Optional[bool] = None,
                        stress: Optional[bool] = None) -> dict:
    """MAE and RMSE of a checkpoint's model on a dataset, in the target's unit.

    Args:
        checkpoint: a ``.pt`` file (or run folder, which means its ``best.pt``).
        data: None re-creates the training run's data and takes ``split``; a
            recipe ``.yaml`` uses its data section; a structure file
            (extxyz, ASE db, ...) is read whole with `ASEDataset`.
        split: train, val, test or all.
        forces: evaluate forces too (default: when the data has them).
        stress: evaluate stress too (default: when the data has them): the error over all 9
            components of each labelled structure's stress, eV/Å³, ASE's sign (positive under
            tension), as training reports it.

    Returns:
        ``{"split", "structures", "target", "unit", "energy_mae", "energy_rmse", ...}``, with
        ``forces_mae``/``forces_rmse`` and ``stress_mae``/``stress_rmse`` when evaluated, and
        ``labelled`` (how many structures carry each label).

    Raises:
        ValueError: data without ``energy`` labels, or (data given here) with elements the
            model was not trained on (the checkpoint's ``normalization["elements"]``).
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    model = model_from_checkpoint(checkpoint, device=device)
    dtype = model.dtype
    dataset, split, target = _dataset_for(checkpoint, data, split, dtype)
    _check_data(dataset, checkpoint, data)
    trained_loss = from_dict(TrainConfig, checkpoint["train_config"]).loss
    counts = label_counts(dataset)
    wanted = {}
    for label, asked in ((keys.FORCES, forces), (keys.STRESS, stress)):
        wanted[label] = asked if asked is not None else label in counts and model.uses_positions
        if wanted[label] and label not in counts:
            raise ValueError(f"{label} was asked for but the data has no {label!r} labels")
        if wanted[label] and not model.uses_positions:
            raise ValueError(f"{label} was asked for but this model does not use positions, so it has no {label}")
    loss = Loss(replace(trained_loss, forces_weight=1.0 if wanted[keys.FORCES] else 0.0,
                        stress_weight=1.0 if wanted[keys.STRESS] else 0.0))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    result = evaluate_model(model, loader, device, loss)
    return {"split": split, "structures": len(dataset), "target": target.name, "unit": target.unit,
            "intensive": target.intensive, "labelled": counts, **result.stats.result()}


__all__ = ["Evaluation", "evaluate_model", "combined_loss", "evaluate_checkpoint"]
