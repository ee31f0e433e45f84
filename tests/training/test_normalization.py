"""Normalisation comes from the training split only and reproduces what it fits."""

import pytest
import torch

from geognn.data import QM9
from geognn.models import build_model
from geognn.training.data import Target
from geognn.training.normalization import Normalization, compute_normalization
from tests.training.conftest import SAMPLES


@pytest.fixture
def molecules(tmp_path):
    return QM9(tmp_path, source=SAMPLES / "qm9_xyz", dtype=torch.float64, progress=False)


def test_fitted_references_recover_linear_energies(molecules):
    element_energy = torch.zeros(101, dtype=torch.float64)
    element_energy[[1, 6, 7, 8, 9]] = torch.tensor([-13.6, -1030.0, -1485.0, -2040.0, -2715.0], dtype=torch.float64)
    data = molecules.copy()
    composition_energy = [float(element_energy[molecules[i].z].sum()) for i in range(len(molecules))]
    data._data.energy = torch.tensor(composition_energy, dtype=torch.float64)
    norm = compute_normalization(data, Target("U0", "eV", False), 100, fit_references=True, use_forces=False)
    present = torch.tensor(norm.atomic_reference, dtype=torch.float64)[[1, 6, 7, 8, 9]]
    assert torch.allclose(present, element_energy[[1, 6, 7, 8, 9]], atol=1e-8)
    assert norm.elements == [1, 6, 7, 8, 9]  # the elements the training split holds, for the calculator's check
    assert abs(norm.energy_shift) < 1e-9  # nothing left per atom
    model = build_model("egnn", hidden_channels=8, num_layers=1).double()
    norm.apply(model)
    with torch.no_grad():
        for module in model.modules():  # zero output head: prediction = references + shift
            if isinstance(module, torch.nn.Linear):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
    out = model(molecules[3])
    assert torch.allclose(out["energy"], torch.tensor([composition_energy[3]], dtype=torch.float64), atol=1e-8)


def test_intensive_targets_use_mean_and_std(molecules):
    norm = compute_normalization(molecules, Target("gap", "eV", True), 100, fit_references=True, use_forces=False)
    energies = molecules._data.energy[molecules.indices()] if molecules._indices else molecules._data.energy
    assert norm.energy_shift == pytest.approx(float(energies.mean()))
    assert norm.energy_scale == pytest.approx(float(energies.std()))
    assert all(value == 0 for value in norm.atomic_reference)


def test_only_training_structures_count(molecules):
    train, rest = molecules.split([20, None])
    before = compute_normalization(train, Target("U0", "eV", False), 100, True, False)
    rest._data.energy[rest.indices()] += 1000.0  # the held-out labels change; the training ones do not
    assert compute_normalization(train, Target("U0", "eV", False), 100, True, False) == before


def test_round_trip_and_errors(molecules):
    norm = compute_normalization(molecules, Target("U0", "eV", False), 100, True, False)
    assert Normalization.from_dict(norm.to_dict()) == norm
    older = {key: value for key, value in norm.to_dict().items() if key != "elements"}  # checkpoints before elements
    assert Normalization.from_dict(older).elements is None
    with pytest.raises(ValueError, match="element references"):
        norm.apply(build_model("egnn", max_atomic_number=10))
    broken = molecules.copy()
    broken._data.energy[2] = float("nan")
    with pytest.raises(ValueError, match="non-finite 'energy' label"):
        compute_normalization(broken, Target("U0", "eV", False), 100, True, False)


def test_extensive_shift_and_scale_are_per_atom_statistics(molecules):
    """Without references, an extensive target's shift and scale are the mean and standard
    deviation of E / n over the training structures (n atoms each, from 3 to 9 here); with fitted
    references, of (E - Σ references) / n. Computed here one molecule at a time."""
    target = Target("U0", "eV", False)
    plain = compute_normalization(molecules, target, 100, fit_references=False, use_forces=False)
    per_atom = torch.tensor([float(m.energy) / m.num_nodes for m in molecules], dtype=torch.float64)
    assert len({m.num_nodes for m in molecules}) > 3  # sizes differ, so E / n is not a rescaled E
    assert plain.energy_shift == pytest.approx(float(per_atom.mean()), rel=1e-12)
    assert plain.energy_scale == pytest.approx(float(per_atom.std()), rel=1e-12)
    fitted = compute_normalization(molecules, target, 100, fit_references=True, use_forces=False)
    references = torch.tensor(fitted.atomic_reference, dtype=torch.float64)
    residual = torch.tensor([(float(m.energy) - float(references[m.z].sum())) / m.num_nodes for m in molecules],
                            dtype=torch.float64)
    assert fitted.energy_shift == pytest.approx(float(residual.mean()), abs=1e-9)
    assert fitted.energy_scale == pytest.approx(float(residual.std()), rel=1e-9)
