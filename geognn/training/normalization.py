"""Normalisation of the model's output, computed from the training split only.

A model predicts per-atom energies ``raw * energy_scale + energy_shift +
atomic_reference[z]`` (see `geognn.models.EnergyModel`). Before training:

* extensive targets (energies, and every QM9 property except homo, lumo and
  gap): ``atomic_reference`` are per-element values fitted by least squares
  on the training split (the "E0s" of MACE, the per-species shifts of
  NequIP); ``energy_shift`` is the mean per-atom residual left after them and
  ``energy_scale`` the standard deviation of that residual, or the force RMS
  when forces are trained (as NequIP and MACE do);
* intensive targets use a mean readout, no references, and the mean and
  standard deviation of the target.

Validation and test structures never enter these statistics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch_geometric.loader import DataLoader

from geognn.data import keys
from geognn.data.labels import select, structure_mask
from geognn.data.stats import energy_residuals, fit_element_energies, force_rms
from geognn.training.data import Target


@dataclass
class Normalization:
    """Output normalisation and what the target is; stored in checkpoints as a plain dict."""

    target: str
    unit: str
    intensive: bool
    energy_scale: float
    energy_shift: float
    atomic_reference: list  # [max_atomic_number + 1] floats, eV (or the target's unit)
    elements: Optional[list] = None  # atomic numbers in the training split (None in checkpoints before it was kept)
    potential_energy: Optional[bool] = None  # the target is a potential energy in eV (None: older checkpoints)

    def apply(self, model) -> None:
        """Write scale, shift and references into the model's buffers."""
        if len(self.atomic_reference) != model.atomic_reference.numel():
            raise ValueError(
                f"normalisation has {len(self.atomic_reference)} element references but the model embeds "
                f"{model.atomic_reference.numel()} (max_atomic_number + 1)"
            )
        with torch.no_grad():
            model.energy_scale.fill_(self.energy_scale)
            model.energy_shift.fill_(self.energy_shift)
            model.atomic_reference.copy_(torch.tensor(self.atomic_reference, dtype=torch.float64))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, mapping: dict) -> "Normalization":
        return cls(**mapping)


def _energies_sizes_elements(dataset) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Energies and sizes of the structures with an energy label, and the elements of all."""
    energies, sizes, elements = [], [], set()
    for batch in DataLoader(dataset, batch_size=1024):
        labelled = structure_mask(batch, keys.ENERGY)
        energies.append(select(batch[keys.ENERGY].to(torch.float64).reshape(-1), labelled))
        sizes.append(select(torch.diff(batch.ptr), labelled))
        elements.update(torch.unique(batch[keys.ATOMIC_NUMBERS]).tolist())
    return torch.cat(energies), torch.cat(sizes).to(torch.float64), sorted(elements)


def compute_normalization(train, target: Target, max_atomic_number: int, fit_references: bool,
                          use_forces: bool, references: Optional[torch.Tensor] = None) -> Normalization:
    """Normalisation from the training split (see the module doc); ``references`` [Z + 1] (eV) are
    per-element energies given instead of fitted (isolated atoms, or the recipe's own values).
    Only structures with an energy label enter the energy statistics."""
    if len(train) == 0:
        raise ValueError("the training split is empty; normalisation needs at least one structure")
    energies, sizes, elements = _energies_sizes_elements(train)
    if not bool(torch.isfinite(energies).all()):
        bad = int(torch.nonzero(~torch.isfinite(energies))[0])
        raise ValueError(f"training structure {bad} has a non-finite '{keys.ENERGY}' label; clean the dataset first")
    given = references is not None
    references = torch.zeros(max_atomic_number + 1, dtype=torch.float64) if not given else references.double()
    shift, scale = 0.0, 1.0
    if target.intensive:
        if len(energies):
            shift, scale = float(energies.mean()), float(energies.std()) if len(energies) > 1 else 1.0
    else:
        if fit_references and not given and len(energies):
            references = fit_element_energies(train, max_atomic_number=max_atomic_number)
        per_atom = energy_residuals(train, references) / sizes
        if len(per_atom):
            shift = float(per_atom.mean())
            scale = float(per_atom.std()) if len(per_atom) > 1 else 1.0
        if use_forces:
            scale = force_rms(train)
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0  # e.g. a single structure, or constant labels
    return Normalization(target.name, target.unit, target.intensive, scale, shift, references.tolist(), elements,
                         target.potential_energy)


__all__ = ["Normalization", "compute_normalization"]
