"""Checkpoints: plain dicts of tensors and values, never pickled modules.

A checkpoint holds ``format_version``, ``model_name``, ``model_config`` (the
fields of the model's config dataclass), ``state_dict`` (the weights used for
prediction: the EMA average when training kept one, with the normalisation
buffers), ``normalization``, ``train_config`` and ``metrics``; a training
checkpoint adds ``training_state`` (raw weights, optimizer, schedule, EMA and
data position) so that a run can resume. Everything loads with
``torch.load(..., weights_only=True)``.

This lives with the models (not with training) because the ASE calculator
and evaluation load checkpoints without touching training code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from geognn.data.qm9 import ENERGY_TARGETS as QM9_ENERGY_TARGETS
from geognn.models.base import EnergyModel

FORMAT_VERSION = 1
ENERGY_TARGETS = ("energy", *sorted(QM9_ENERGY_TARGETS))  # targets that are potential energies (eV)
REQUIRED_KEYS = ("format_version", "model_name", "model_config", "state_dict", "normalization", "train_config", "metrics")


def save_checkpoint(checkpoint: dict, path: Union[str, Path]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash while writing leaves the previous file at ``path`` intact.
    """
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"a checkpoint needs the keys {list(REQUIRED_KEYS)}; missing {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(checkpoint, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> dict:
    """Read a geognn checkpoint (``weights_only=True``); other files raise a ValueError that says what they are."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path} is a folder without best.pt or last.pt; give a checkpoint file")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix.lower() in (".yaml", ".yml"):
        run_dir = path.parent
        if any((run_dir / name).exists() for name in ("best.pt", "last.pt")):  # a run's copy of its recipe
            best = run_dir / ("best.pt" if (run_dir / "best.pt").exists() else "last.pt")
            raise ValueError(f"{path} is a training recipe, not a checkpoint; pass the run folder {run_dir} "
                             f"(its {best.name}) or {best}")
        raise ValueError(f"{path} is a recipe, not a checkpoint: train it with `geognn train {path}`, then give "
                         "the run folder or its best.pt")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for foreign files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{path} is not a geognn checkpoint ({type(err).__name__}: {first_line}); "
            "geognn checkpoints are plain dicts written by geognn.training (a run folder's best.pt or last.pt)"
        ) from None
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise ValueError(f"{path} is not a geognn checkpoint (no 'format_version'); was it saved by another library?")
    if checkpoint["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {checkpoint['format_version']}, newer than this geognn reads "
            f"({FORMAT_VERSION}); upgrade geognn"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} lacks checkpoint keys {missing}")
    return checkpoint


def model_from_checkpoint(checkpoint: Union[dict, str, Path], device: Any = "cpu",
                          dtype: Optional[torch.dtype] = None) -> EnergyModel:
    """The model a checkpoint describes, with its prediction weights, in eval mode.

    ``dtype`` defaults to the dtype the weights were saved in.
    """
    from geognn.models import MODELS  # geognn.models imports this module

    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    name = checkpoint["model_name"]
    if name not in MODELS:
        raise ValueError(f"the checkpoint's model {name!r} is not one of this geognn's models {sorted(MODELS)}")
    model = MODELS[name].from_config(_runnable_here(saved_model_config(checkpoint)))
    state = checkpoint["state_dict"]
    saved_dtype = state["atomic_reference"].dtype
    model.to(saved_dtype).load_state_dict(state)
    return model.to(device=device, dtype=dtype or saved_dtype).eval()


# Options added after checkpoints existed whose default changed the model: what a checkpoint
# without the option was trained with.
_BEFORE_OPTION = {"painn": {"vector_norm": "paper"}}


def saved_model_config(checkpoint: dict) -> dict:
    """The checkpoint's model config, with options it predates set to what it was trained with."""
    config = dict(checkpoint["model_config"])
    for option, value in _BEFORE_OPTION.get(checkpoint["model_name"], {}).items():
        config.setdefault(option, value)
    return config


def _runnable_here(config: dict) -> dict:
    """The model config with a neighbour backend this machine has: every backend gives the same
    graph, so a checkpoint made with torch-cluster runs on vesin where torch-cluster is missing."""
    from geognn.graph import NEIGHBOR_BACKENDS

    backend = NEIGHBOR_BACKENDS.get(config.get("neighbor_backend", "auto"))
    if backend is None or backend.is_installed():
        return config
    warnings.warn(
        f"the checkpoint's model searches neighbours with {backend.name!r}, which is not installed here; "
        "using 'auto' instead (every backend gives the same graph)",
        stacklevel=3,
    )
    return {**config, "neighbor_backend": "auto"}


def checkpoint_normalization(checkpoint: dict) -> dict:
    """The checkpoint's normalisation record (target, unit, elements, ...); {} when it has none."""
    return checkpoint["normalization"] or {}  # None in checkpoints saved by hand without training


def load_energy_checkpoint(path: Union[str, Path]) -> dict:
    """A checkpoint whose model predicts a potential energy in eV (what the ASE calculator and
    `geognn.export` run); anything else raises ValueError."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    normalization = checkpoint_normalization(checkpoint)
    target, unit = normalization.get("target", "energy"), normalization.get("unit", "eV")
    potential = normalization.get("potential_energy")
    if potential is None:  # checkpoints from before the flag
        potential = target in ENERGY_TARGETS
    if not potential or unit != "eV" or normalization.get("intensive", False):
        raise ValueError(
            f"{path} predicts {target!r} ({unit}{', intensive' if normalization.get('intensive') else ''}), "
            f"not a potential energy; an ASE calculator needs a model trained on one of {list(ENERGY_TARGETS)}"
        )
    return checkpoint


def warn_if_trained_without_forces(checkpoint: dict, path: Union[str, Path]) -> None:
    """Warn when `geognn train` fitted the checkpoint on energies alone (loss.forces_weight 0)."""
    config = checkpoint.get("train_config") or {}
    loss = config.get("loss") if isinstance(config, dict) else None
    if isinstance(loss, dict) and not loss.get("forces_weight", 0):
        warnings.warn(
            f"{path} was trained without forces (loss.forces_weight 0): its energies were fitted at the "
            "dataset's geometries only (QM9: equilibrium structures), and its forces are untested; "
            "fine for single-point energies, not for MD or relaxation. Train on energies and forces "
            "(e.g. train/qm9_xtb_egnn.yaml) for those",
            stacklevel=3,
        )


__all__ = ["FORMAT_VERSION", "REQUIRED_KEYS", "ENERGY_TARGETS", "save_checkpoint", "load_checkpoint", "model_from_checkpoint",
           "load_energy_checkpoint", "checkpoint_normalization", "warn_if_trained_without_forces"]
