"""Losses and error metrics for energies, forces and stress.

Losses are in the target's units (eV², (eV/Å)² for MSE; eV, eV/Å for MAE),
as in SchNetPack, NequIP and MACE: the energy term averages over structures
(per atom with ``energy_per_atom``), the force term over force components,
the stress term over stress components. Each is a sum over items divided by
an item count that the trainer may all-reduce across processes first, so
that P data-parallel processes with batch b give exactly the loss (and
gradient) of one process with batch P·b.

Metrics (`ErrorStats`) are kept in the target's unit (eV, eV/Å, eV/Å³) and
reported in meV by `format_metrics`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from geognn.data import keys
from geognn.data.labels import atom_mask, select, structure_mask
from geognn.data.units import display_unit
from geognn.training.config import LossSection

QUANTITIES = ("energy", "energy_per_atom", "forces", "stress")
# Unit of each quantity relative to the target's unit (for display).
_SUFFIX = {"energy": "", "energy_per_atom": "/atom", "forces": "/Å", "stress": "/Å³"}


def prediction_errors(out: dict, batch, want_forces: bool, want_stress: bool) -> dict[str, Tensor]:
    """Prediction − reference for each labelled quantity: energy [B] and per atom [B] (float64),
    forces [N, 3], stress [B, 3, 3] (all 9 components, ASE's sign).

    In a batch of mixed labels (`keys.LABEL_MASK`) each holds the labelled structures (or their
    atoms) only, so that means over the errors count exactly the labels that exist. A quantity
    asked for that the batch has no labels of at all is left out (training refuses such a loss
    term before it starts: `geognn.training.data.check_labels`).
    """
    sizes = torch.diff(batch.ptr).to(torch.float64) if hasattr(batch, "ptr") and batch.ptr is not None else None
    energy = out[keys.ENERGY].to(torch.float64) - batch[keys.ENERGY].to(torch.float64).reshape(-1)
    if sizes is None:
        sizes = torch.full_like(energy, float(batch[keys.ATOMIC_NUMBERS].numel()))
    labelled = structure_mask(batch, keys.ENERGY)
    errors = {"energy": select(energy, labelled), "energy_per_atom": select(energy / sizes, labelled)}
    if want_forces and keys.FORCES in batch:
        errors["forces"] = select(out[keys.FORCES] - batch[keys.FORCES], atom_mask(batch, keys.FORCES))
    if want_stress and keys.STRESS in batch:
        error = out[keys.STRESS] - batch[keys.STRESS].reshape(out[keys.STRESS].shape)
        errors["stress"] = select(error, structure_mask(batch, keys.STRESS))
    return errors


def _elementwise(error: Tensor, kind: str, delta: float) -> Tensor:
    if kind == "mse":
        return error.square()
    if kind == "mae":
        return error.abs()
    return F.huber_loss(error, torch.zeros_like(error), reduction="none", delta=delta)


class Loss:
    """Weighted energy / force / stress loss (see the module doc for the reductions)."""

    def __init__(self, section: LossSection):
        self.section = section
        self.weights = {
            "energy_per_atom" if section.energy_per_atom else "energy": section.energy_weight,
            "forces": section.forces_weight,
            "stress": section.stress_weight,
        }
        self.weights = {name: weight for name, weight in self.weights.items() if weight > 0}

    @property
    def wants_forces(self) -> bool:
        return "forces" in self.weights

    @property
    def wants_stress(self) -> bool:
        return "stress" in self.weights

    def stress_of(self, batch) -> bool:
        """Whether to compute stress for ``batch``: the loss has a stress term and the batch has
        cells and stress labels (a test file of molecules has neither)."""
        return self.wants_stress and keys.CELL in batch and keys.STRESS in batch

    def sums(self, errors: dict[str, Tensor]) -> dict[str, tuple[Tensor, int]]:
        """Per term: (sum of elementwise losses of the errors, number of items); a term without errors
        (labels the batch lacks) is (0, 0), so that every process reports the same terms."""
        result = {}
        for name in self.weights:
            if name not in errors:
                result[name] = (errors["energy"].new_zeros(()), 0)
                continue
            error = errors[name]
            result[name] = (_elementwise(error, self.section.kind, self.section.huber_delta).sum(), error.numel())
        return result

    def combine(self, sums: dict[str, tuple[Tensor, int]], counts: Optional[dict[str, float]] = None) -> Tensor:
        """Σ weight × sum / count, with ``counts`` the global item counts (default: the local ones)."""
        total = 0.0
        for name, (value, local_count) in sums.items():
            count = counts[name] if counts is not None else local_count
            total = total + self.weights[name] * value / max(count, 1)
        return total


class ErrorStats:
    """Running sums of |error| and error² per quantity, mergeable across processes."""

    def __init__(self, quantities=QUANTITIES):
        self.quantities = tuple(quantities)
        self.totals = torch.zeros(len(self.quantities), 3, dtype=torch.float64)  # |e| sum, e² sum, count

    def update(self, errors: dict[str, Tensor]) -> None:
        for row, name in enumerate(self.quantities):
            if name in errors:
                error = errors[name].detach().to(torch.float64)
                if self.totals.device != error.device:  # sums stay on the GPU: no synchronisation per step
                    self.totals = self.totals.to(error.device)
                self.totals[row] += torch.stack([error.abs().sum(), error.square().sum(),
                                                 error.new_tensor(float(error.numel()))])

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.totals)

    def result(self) -> dict[str, float]:
        """``<quantity>_mae`` and ``<quantity>_rmse`` in the target's unit, for the quantities seen."""
        metrics = {}
        for row, name in enumerate(self.quantities):
            absolute, square, count = self.totals[row].tolist()
            if count > 0:
                metrics[f"{name}_mae"] = absolute / count
                metrics[f"{name}_rmse"] = (square / count) ** 0.5
        return metrics


def format_metrics(metrics: dict[str, float], unit: str = "eV", target: str = "energy",
                   intensive: bool = False) -> str:
    """"U0 MAE 12.3 meV, U0 per atom MAE 0.7 meV/atom, forces MAE 45.6 meV/Å, ..." for ``metrics``.

    The energy entries are named after the target (``metrics["target"]`` when present) and
    given in its unit; the per-atom figure is shown only for extensive energies in eV (an
    intensive target, such as QM9's gap, or a dipole has none).
    """
    target = metrics.get("target", target)
    intensive = bool(metrics.get("intensive", intensive))
    factor, shown = display_unit(unit)
    parts = []
    for name in QUANTITIES:
        if name == "energy_per_atom" and (intensive or unit != "eV"):
            continue
        for stat in ("mae", "rmse"):
            key = f"{name}_{stat}"
            if key in metrics:
                label = {"energy": target, "energy_per_atom": f"{target} per atom"}.get(name, name)
                parts.append(f"{label} {stat.upper()} {metrics[key] * factor:.4g} {shown}{_SUFFIX[name]}")
    return ", ".join(parts)


__all__ = ["QUANTITIES", "prediction_errors", "Loss", "ErrorStats", "format_metrics"]
