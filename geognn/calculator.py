"""ASE calculators: energies, forces, per-atom energies and stress from geognn models.

``GeoGNNCalculator`` wraps one model; ``EnsembleCalculator`` wraps several
(a committee, e.g. the same recipe trained with different seeds) and adds
their spread, the uncertainty estimate used to pick structures to label next::

    from geognn.calculator import GeoGNNCalculator

    atoms.calc = GeoGNNCalculator.from_checkpoint("runs/qm9_xtb_egnn/best.pt", dtype="float64")
    atoms.get_potential_energy(), atoms.get_forces()

Every call computes energy, per-atom energies and forces together (and the
stress when some direction is periodic), so ASE's separate requests for
energy and forces cost one model evaluation and one radius graph. ASE calls
the model again only when positions, cell, pbc or atomic numbers change;
charges and magnetic moments, which no geognn model reads, are ignored.

Units are ASE's: eV, Å, eV/Å, eV/Å³ (stress in Voigt order xx, yy, zz, yz,
xz, xy, positive under tension, ``(1/V) dE/dε``).

This module uses models and data conversion only, never the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from geognn._checks import FLOAT_DTYPES, resolve_device
from geognn._malloc import keep_freed_memory
from geognn._subnormals import flush_subnormals
from geognn.data import atoms_to_data, keys
from geognn.models.base import EnergyModel
from geognn.models.checkpoint import (ENERGY_TARGETS, checkpoint_normalization, load_energy_checkpoint,
                                      model_from_checkpoint, warn_if_trained_without_forces)

# Targets whose model is a potential-energy surface (eV, extensive), for checkpoints written
# before the normalisation recorded ``potential_energy`` itself: the generic ``energy`` label
# and QM9's energies, as `geognn.data.qm9` declares them.

_DTYPES = {**FLOAT_DTYPES, **{dtype: dtype for dtype in FLOAT_DTYPES.values()}}  # names or torch dtypes

PathLike = Union[str, Path]


def _resolve_dtype(dtype, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64' (or the torch dtypes), got {dtype!r}")
    return _DTYPES[dtype]


def _symbols(numbers: Iterable[int]) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


class GeoGNNCalculator(Calculator):
    """An ASE calculator around a geognn model (or, through `EnsembleCalculator`, several).

    Args:
        model: an `EnergyModel`. The calculator moves it to ``device`` and
            ``dtype`` and puts it in eval mode (it is not copied).
        device: "cpu", "cuda", "cuda:1", "auto" or a `torch.device`; default:
            where the model already is.
        dtype: "float32" or "float64" (or the torch dtypes); default: the
            model's dtype. Use float64 for MD that must conserve energy
            to high precision and for finite-difference checks.
        elements: atomic numbers the model was trained on; structures with
            other elements raise ValueError. Default: every element the
            model embeds (`from_checkpoint` passes the training set's).
        **kwargs: passed to `ase.calculators.calculator.Calculator`
            (``label``, ``directory``, ...).

    ``results`` holds ``energy`` and ``free_energy`` (eV), ``energies``
    ([N] per-atom energies, eV), ``forces`` ([N, 3] eV/Å) and, for periodic
    structures, ``stress`` (Voigt, eV/Å³).

    Structures the models cannot take raise ValueError saying what is wrong:
    elements outside ``elements``, and, as `geognn.data.atoms_to_data` finds
    them, NaN positions and two atoms closer than 1e-4 Å, periodic images
    included (the message names both atoms and the lattice shift).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    ignored_changes = {"initial_charges", "initial_magmoms"}  # no geognn model reads them

    def __init__(self, model: EnergyModel, device=None, dtype=None, elements: Optional[Iterable[int]] = None,
                 **kwargs):
        keep_freed_memory()  # glibc: MD steps reuse freed buffers (geognn/_malloc.py; GEOGNN_MALLOC=0 opts out)
        flush_subnormals()  # a perfect crystal's cancelling features underflow (geognn/_subnormals.py)
        self._setup([model], device, dtype, elements)
        super().__init__(**kwargs)

    @classmethod
    def from_checkpoint(cls, path: PathLike, device="cpu", dtype=None, **kwargs) -> "GeoGNNCalculator":
        """The calculator for a checkpoint written by `geognn train` (a file, or a run folder: its best.pt).

        The model's dtype defaults to the one the weights were saved in.
        Checkpoints of another format, or of a model that predicts something
        other than an energy in eV (QM9's gap, dipole, ...), raise ValueError.
        """
        checkpoint = load_energy_checkpoint(path)
        warn_if_trained_without_forces(checkpoint, path)
        model = model_from_checkpoint(checkpoint).requires_grad_(False)  # forces need gradients of positions only
        elements = kwargs.pop("elements", None) or checkpoint_normalization(checkpoint).get("elements")
        return cls(model, device=device, dtype=dtype, elements=elements, **kwargs)

    # ------------------------------------------------------------ set-up

    def _setup(self, models: Sequence[EnergyModel], device, dtype, elements: Optional[Iterable[int]]) -> None:
        """Check the models, move them to one device and dtype in eval mode, and fix the allowed elements."""
        for model in models:
            if not isinstance(model, EnergyModel):
                raise TypeError(f"expected a geognn EnergyModel, got {type(model).__name__}; "
                                "load checkpoints with GeoGNNCalculator.from_checkpoint(path)")
            if not model.uses_positions:
                raise ValueError(f"{type(model).__name__} does not use positions beyond its "
                                 f"{model.graph_builder!r} graph, so it has no forces; the calculator needs a "
                                 "model whose energy is differentiable in the positions")
            if model.config.readout != "sum":
                raise ValueError(f"the model's readout is {model.config.readout!r}: it predicts an intensive "
                                 "property, not an energy; an ASE calculator needs a sum readout")
        first = models[0].atomic_reference
        device = resolve_device(device) if device is not None else first.device
        dtype = _resolve_dtype(dtype, first.dtype)
        self.models = [model.to(device=device, dtype=dtype).eval() for model in models]

        embedded = frozenset(range(1, min(model.config.max_atomic_number for model in models) + 1))
        if elements is None:
            self.elements = embedded
            return
        self.elements = frozenset(int(z) for z in elements)
        if not self.elements <= embedded:
            raise ValueError(f"elements {_symbols(sorted(self.elements - embedded))} lie outside the model's embedding")

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.models[0].dtype

    # ------------------------------------------------------------ calculation

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)  # sets self.atoms to a copy
        unknown = sorted(set(self.atoms.numbers.tolist()) - self.elements)
        if unknown:
            raise ValueError(
                f"{self.atoms.get_chemical_formula()} contains {_symbols(unknown)}, which this model was not "
                f"trained on (it knows {', '.join(chemical_symbols[z] for z in sorted(self.elements))}); "
                "its energy would be a guess"
            )
        # Raises ValueError on NaN positions and on two atoms at one point (an MD step that blew up),
        # naming them, before a model turns them into NaN energies.
        data = atoms_to_data(self.atoms, dtype=self.dtype).to(self.device)
        periodic = data.get(keys.CELL) is not None
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress needs a periodic structure; these atoms have pbc=False in every direction"
            )
        outputs = [model(data, compute_forces=True, compute_stress=periodic) for model in self.models]
        wanted = [keys.ENERGY, keys.NODE_ENERGY, keys.FORCES] + ([keys.STRESS] if periodic else [])
        # [M, ...] per model, float64 NumPy as ASE expects.
        stacked = {key: torch.stack([out[key].detach() for out in outputs]).to(torch.float64).cpu().numpy()
                   for key in wanted}
        self.results = self._results(stacked)

    def _results(self, stacked: dict[str, np.ndarray]) -> dict:
        energy = float(stacked[keys.ENERGY].mean(0)[0])
        results = {
            "energy": energy,
            "free_energy": energy,
            "energies": stacked[keys.NODE_ENERGY].mean(0),
            "forces": stacked[keys.FORCES].mean(0),
        }
        if keys.STRESS in stacked:
            results["stress"] = full_3x3_to_voigt_6_stress(stacked[keys.STRESS].mean(0)[0])
        return results


class EnsembleCalculator(GeoGNNCalculator):
    """The mean prediction of several models, with their spread as an uncertainty.

    ``results`` holds the committee means under the usual names (energy,
    free_energy, energies, forces, stress) and:

    * ``energy_std``: standard deviation of the energies (eV);
    * ``forces_std``: [N] per atom, ``sqrt(mean_m |F_i^m - <F_i>|²)`` (eV/Å),
      the force deviation DeePMD-kit's active learning thresholds;
    * ``max_forces_std``: its largest value over atoms, the usual criterion
      for sending a structure to be labelled;
    * ``stress_std``: Voigt, per component (periodic structures);
    * ``energy_committee`` [M] and ``forces_committee`` [M, N, 3]: every model's own prediction.

    Standard deviations are over models with ``ddof=0``. Read them as
    ``atoms.calc.results["max_forces_std"]`` after any property call.

    Args:
        models: two or more `EnergyModel`s, trained on the same target and units.
        device: as `GeoGNNCalculator`.
        dtype: as `GeoGNNCalculator`.
        elements: as `GeoGNNCalculator`; defaults to those every model knows.
        **kwargs: as `GeoGNNCalculator`.
    """

    def __init__(self, models: Sequence[EnergyModel], device=None, dtype=None,
                 elements: Optional[Iterable[int]] = None, **kwargs):
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(models)}; use GeoGNNCalculator")
        keep_freed_memory()
        flush_subnormals()
        self._setup(models, device, dtype, elements)
        Calculator.__init__(self, **kwargs)  # GeoGNNCalculator.__init__ takes one model

    @classmethod
    def from_checkpoint(cls, path, device="cpu", dtype=None, **kwargs):
        raise TypeError("an ensemble is built from several checkpoints: EnsembleCalculator.from_checkpoints(paths)")

    @classmethod
    def from_checkpoints(cls, paths: Sequence[PathLike], device="cpu", dtype=None,
                         **kwargs) -> "EnsembleCalculator":
        """One model per checkpoint (files or run folders); all must predict the same kind of energy."""
        checkpoints = [load_energy_checkpoint(path) for path in paths]
        for checkpoint, path in zip(checkpoints, paths):
            warn_if_trained_without_forces(checkpoint, path)
        targets = {checkpoint_normalization(checkpoint).get("target", "energy") for checkpoint in checkpoints}
        if len(targets) > 1:
            raise ValueError(f"the checkpoints predict different targets {sorted(targets)}; "
                             "an ensemble averages models of one target")
        models = [model_from_checkpoint(checkpoint).requires_grad_(False) for checkpoint in checkpoints]
        elements = kwargs.pop("elements", None)
        known = [checkpoint_normalization(checkpoint).get("elements") for checkpoint in checkpoints]
        if elements is None and all(known):
            elements = frozenset.intersection(*map(frozenset, known))
        return cls(models, device=device, dtype=dtype, elements=elements, **kwargs)

    def _results(self, stacked: dict[str, np.ndarray]) -> dict:
        results = super()._results(stacked)
        forces = stacked[keys.FORCES]  # [M, N, 3]
        deviation = forces - forces.mean(0)
        forces_std = np.sqrt((deviation ** 2).sum(-1).mean(0))  # [N]
        results.update(
            energy_std=float(stacked[keys.ENERGY][:, 0].std()),
            forces_std=forces_std,
            max_forces_std=float(forces_std.max()),
            energy_committee=stacked[keys.ENERGY][:, 0].copy(),
            forces_committee=forces.copy(),
        )
        if keys.STRESS in stacked:
            voigt = np.stack([full_3x3_to_voigt_6_stress(stress[0]) for stress in stacked[keys.STRESS]])
            results["stress_std"] = voigt.std(0)
        return results


__all__ = ["GeoGNNCalculator", "EnsembleCalculator", "ENERGY_TARGETS"]
