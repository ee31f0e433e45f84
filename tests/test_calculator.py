"""The ASE calculators: exact forces and stress, symmetry, caching, MD, ensembles and clear errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.io import read
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from geognn.calculator import EnsembleCalculator, GeoGNNCalculator
from geognn.models import build_model, load_checkpoint, save_checkpoint
from geognn.training import TrainConfig, fit, from_dict

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "samples"
XTB_SAMPLE = SAMPLES / "qm9_xtb_sample.extxyz"


def _model(seed: int = 0, **options):
    """A float64 EGNN with a non-trivial output normalisation."""
    torch.manual_seed(seed)
    model = build_model("egnn", hidden_channels=16, num_layers=2, num_radial=6, **options).double()
    with torch.no_grad():
        model.energy_scale.fill_(0.7)
        model.energy_shift.fill_(-0.2)
        model.atomic_reference[[1, 6, 7, 8, 9, 11, 14, 17]] = torch.tensor(
            [-13.6, -1030.0, -1485.0, -2040.0, -2715.0, -4414.0, -7870.0, -12500.0], dtype=torch.float64)
    return model


def _train(run_dir: Path, seed: int, **changes) -> Path:
    """A few optimisation steps on the shipped QM9-xTB sample; returns best.pt."""
    recipe = {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "data": {"dataset": "ase", "options": {"paths": str(XTB_SAMPLE)}, "split": [10, 3, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none", "ema_decay": None},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 100},
        "dtype": "float64", "seed": seed, **changes,
    }
    return fit(from_dict(TrainConfig, recipe)).best_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two float64 energy+force checkpoints of the same recipe, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("calc_runs")
    with warnings.catch_warnings():  # 10 frames of 3 molecules cannot pin down 5 element energies; expected here
        warnings.filterwarnings("ignore", message="the dataset's compositions determine only")
        return [_train(root / f"seed{seed}", seed) for seed in (0, 1)]


@pytest.fixture
def molecule_atoms():
    return read(XTB_SAMPLE, index=8)  # C7H10N2, a QM9 molecule's MD snapshot from the training sample


def _periodic():
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    atoms.set_cell(atoms.cell[:] + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.1], [0.1, 0.2, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def _rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # proper rotation


# ------------------------------------------------------------ exactness


def test_forces_equal_ase_numerical_forces(checkpoints, molecule_atoms):
    calc = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    assert calc.dtype == torch.float64  # the dtype the weights were saved in
    molecule_atoms.calc = calc
    forces = molecule_atoms.get_forces()
    numerical = calculate_numerical_forces(molecule_atoms, eps=1e-4)
    assert np.abs(forces - numerical).max() < 1e-6
    assert np.abs(forces).max() > 1e-3  # not trivially zero
    assert molecule_atoms.get_potential_energies().sum() == pytest.approx(molecule_atoms.get_potential_energy(),
                                                                         abs=1e-9)
    assert molecule_atoms.get_potential_energy(force_consistent=True) == molecule_atoms.get_potential_energy()


def test_stress_equals_numerical_stress_for_a_skewed_cell():
    atoms = _periodic()
    atoms.calc = GeoGNNCalculator(_model())
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(stress - numerical).max() < 1e-8
    assert np.abs(stress).max() > 1e-5
    forces = atoms.get_forces()
    assert np.abs(forces - calculate_numerical_forces(atoms, eps=1e-4)).max() < 1e-6


def test_rotating_the_atoms_rotates_forces_and_stress():
    calc = GeoGNNCalculator(_model())
    for atoms in (molecule("CH3CHO"), _periodic()):
        rotation = _rotation(3)
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else None
        turned = atoms.copy()
        turned.set_cell(atoms.cell[:] @ rotation.T)
        turned.positions = atoms.positions @ rotation.T
        turned.calc = calc
        assert abs(turned.get_potential_energy() - energy) < 1e-10
        assert np.abs(turned.get_forces() - forces @ rotation.T).max() < 1e-10
        if stress is not None:
            assert np.abs(turned.get_stress(voigt=False) - rotation @ stress @ rotation.T).max() < 1e-10


def test_float32_on_request_agrees_with_float64(checkpoints, molecule_atoms):
    exact = GeoGNNCalculator.from_checkpoint(checkpoints[0], dtype="float64")
    single = GeoGNNCalculator.from_checkpoint(checkpoints[0], dtype=torch.float32)
    assert single.dtype == torch.float32 and not single.models[0].training
    results = []
    for calc in (exact, single):
        molecule_atoms.calc = calc
        results.append((molecule_atoms.get_potential_energy(), molecule_atoms.get_forces()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    assert np.abs(results[1][1] - results[0][1]).max() < 1e-3 * max(1.0, np.abs(results[0][1]).max())


def test_model_is_put_in_eval_mode():
    model = _model().train()
    GeoGNNCalculator(model)
    assert not model.training


# ------------------------------------------------------------ caching


def test_graph_is_rebuilt_only_when_the_structure_changes(monkeypatch):
    model = _model()
    calls = []
    original = model.build_graph
    monkeypatch.setattr(model, "build_graph", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    atoms = _periodic()
    atoms.calc = GeoGNNCalculator(model)

    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), atoms.get_potential_energies()
    assert len(calls) == 1  # one evaluation serves every property
    atoms.set_momenta(np.ones((len(atoms), 3)))
    atoms.set_initial_charges(np.ones(len(atoms)))
    atoms.set_initial_magnetic_moments(np.ones(len(atoms)))
    atoms.get_forces()
    assert len(calls) == 1  # velocities, charges and moments do not enter the model
    expected = 1
    for change in (lambda: atoms.positions.__iadd__(0.01),
                   lambda: atoms.set_cell(atoms.cell[:] * 1.01, scale_atoms=True),
                   lambda: atoms.set_pbc([True, True, False]),
                   lambda: atoms.numbers.__setitem__(0, 17)):
        change()
        before = atoms.get_potential_energy()
        expected += 1
        assert len(calls) == expected
        assert atoms.get_potential_energy() == before and len(calls) == expected


# ------------------------------------------------------------ dynamics and optimisation


def _nve_total_energies(atoms, timestep_fs: float, duration_fs: float) -> np.ndarray:
    """Total energy per atom minus its start, along Velocity Verlet from 300 K Maxwell-Boltzmann velocities."""
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    totals = []
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    dynamics.run(round(duration_fs / timestep_fs))
    return (np.array(totals) - totals[0]) / len(atoms)


def test_nve_velocity_verlet_conserves_energy(checkpoints, molecule_atoms):
    calc = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    fluctuation = {}
    for timestep in (0.5, 0.25):
        atoms = molecule_atoms.copy()
        atoms.calc = calc
        per_atom = _nve_total_energies(atoms, timestep, duration_fs=100.0)
        assert np.abs(atoms.positions - molecule_atoms.positions).max() > 0.05  # the atoms moved
        drift = abs(np.polyfit(np.arange(len(per_atom)), per_atom, 1)[0]) * (len(per_atom) - 1)
        assert drift < 1e-5 and np.abs(per_atom).max() < 1e-4  # eV/atom
        fluctuation[timestep] = np.abs(per_atom).max()
    # What remains is Velocity Verlet's own error, which falls as timestep²: forces that were not the
    # gradient of the energy would leave an error that does not shrink this way.
    assert 3.0 < fluctuation[0.5] / fluctuation[0.25] < 5.0


def test_bfgs_relaxes_a_rattled_molecule(checkpoints, molecule_atoms):
    atoms = molecule_atoms
    atoms.rattle(0.05, seed=2)
    atoms.calc = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    start = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert atoms.get_potential_energy() < start


# ------------------------------------------------------------ ensembles


def test_ensemble_mean_and_spread_match_its_members(checkpoints, molecule_atoms):
    ensemble = EnsembleCalculator.from_checkpoints(checkpoints)
    members = [GeoGNNCalculator.from_checkpoint(path) for path in checkpoints]
    energies, forces, per_atom = [], [], []
    for calc in members:
        molecule_atoms.calc = calc
        energies.append(molecule_atoms.get_potential_energy())
        forces.append(molecule_atoms.get_forces())
        per_atom.append(molecule_atoms.get_potential_energies())
    molecule_atoms.calc = ensemble
    assert molecule_atoms.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-10)
    assert np.abs(per_atom[0] - per_atom[1]).max() > 1e-6  # the members differ per atom, so the mean is a test
    assert np.abs(molecule_atoms.get_potential_energies() - np.mean(per_atom, axis=0)).max() < 1e-10
    assert np.abs(molecule_atoms.get_forces() - np.mean(forces, axis=0)).max() < 1e-10
    results = ensemble.results
    assert results["energy_std"] == pytest.approx(abs(energies[0] - energies[1]) / 2, abs=1e-10)
    half_gap = np.linalg.norm(forces[0] - forces[1], axis=1) / 2  # two members: each sits this far from the mean
    assert np.abs(results["forces_std"] - half_gap).max() < 1e-10
    assert results["max_forces_std"] == pytest.approx(half_gap.max()) and half_gap.max() > 1e-4
    assert results["forces_committee"].shape == (2, len(molecule_atoms), 3)


def test_ensemble_of_identical_models_has_no_spread():
    atoms = _periodic()
    atoms.calc = EnsembleCalculator([_model(seed=4), _model(seed=4), _model(seed=4)])
    atoms.get_stress()
    results = atoms.calc.results
    assert results["energy_std"] < 1e-12 and results["max_forces_std"] < 1e-12
    assert np.abs(results["stress_std"]).max() < 1e-12


def test_ensemble_stress_is_its_members_mean_and_spread():
    """A periodic cell: the ensemble's stress is the mean of its members' stresses (Voigt), and
    its stress_std their spread; members that differ make either mix-up show."""
    members = [_model(seed=seed) for seed in (4, 5, 6)]
    stresses = []
    for model in members:
        atoms = _periodic()
        atoms.calc = GeoGNNCalculator(model)
        stresses.append(atoms.get_stress())
    stresses = np.array(stresses)
    assert np.abs(stresses[0] - stresses[1]).max() > 1e-4
    atoms = _periodic()
    atoms.calc = EnsembleCalculator(members)
    assert np.abs(atoms.get_stress() - stresses.mean(0)).max() < 1e-12
    assert np.abs(atoms.calc.results["stress_std"] - stresses.std(0)).max() < 1e-12


def test_ensemble_refuses_bad_members(tmp_path, checkpoints):
    with pytest.raises(ValueError, match="at least two"):
        EnsembleCalculator([_model()])
    with pytest.raises(TypeError, match="from_checkpoints"):
        EnsembleCalculator.from_checkpoint(checkpoints[0])
    other = torch.load(checkpoints[1], weights_only=True)
    other["normalization"]["target"] = "U0"
    save_checkpoint(other, tmp_path / "u0.pt")
    with pytest.raises(ValueError, match="different targets"):
        EnsembleCalculator.from_checkpoints([checkpoints[0], tmp_path / "u0.pt"])


# ------------------------------------------------------------ errors


def test_elements_outside_the_training_set_are_refused(checkpoints):
    calc = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    assert calc.elements <= {1, 6, 7, 8, 9}
    gold = Atoms("AuH", positions=[[0, 0, 0], [0, 0, 1.5]])
    gold.calc = calc
    with pytest.raises(ValueError, match=r"Au \(Z=79\), which this model was not trained on"):
        gold.get_potential_energy()
    with pytest.raises(ValueError, match="outside the model's embedding"):
        GeoGNNCalculator(build_model("egnn", max_atomic_number=10), elements=[1, 79])


def test_nan_positions_are_refused(checkpoints, molecule_atoms):
    molecule_atoms.positions[2, 1] = np.nan
    molecule_atoms.calc = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    with pytest.raises(ValueError, match="NaN or inf"):
        molecule_atoms.get_forces()


def test_stress_of_a_molecule_is_not_implemented():
    atoms = molecule("H2O")
    atoms.calc = GeoGNNCalculator(_model())
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_checkpoints_of_the_wrong_kind_are_refused(tmp_path, checkpoints):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a geognn checkpoint"):
        GeoGNNCalculator.from_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a geognn checkpoint"):
        GeoGNNCalculator.from_checkpoint(tmp_path / "notes.pt")
    with pytest.raises(FileNotFoundError):
        GeoGNNCalculator.from_checkpoint(tmp_path / "missing.pt")
    gap = torch.load(checkpoints[0], weights_only=True)
    gap["normalization"].update(target="gap", intensive=True)
    save_checkpoint(gap, tmp_path / "gap.pt")
    with pytest.raises(ValueError, match="not a potential energy"):
        GeoGNNCalculator.from_checkpoint(tmp_path / "gap.pt")
    with pytest.raises(TypeError, match="from_checkpoint"):
        GeoGNNCalculator(str(checkpoints[0]))


def test_run_folder_loads_its_best_checkpoint(checkpoints, molecule_atoms):
    by_file = GeoGNNCalculator.from_checkpoint(checkpoints[0])
    by_folder = GeoGNNCalculator.from_checkpoint(checkpoints[0].parent)
    energies = []
    for calc in (by_file, by_folder):
        molecule_atoms.calc = calc
        energies.append(molecule_atoms.get_potential_energy())
    assert energies[0] == energies[1]


def test_bad_dtype_and_device_are_named():
    with pytest.raises(ValueError, match="float32' or 'float64"):
        GeoGNNCalculator(_model(), dtype="float16")
    with pytest.raises(ValueError, match="not a torch device"):
        GeoGNNCalculator(_model(), device="gpu0")
    with pytest.raises(ValueError, match="intensive"):
        GeoGNNCalculator(build_model("egnn", readout="mean"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            GeoGNNCalculator(_model(), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(checkpoints, molecule_atoms):
    results = []
    for device in ("cpu", "cuda"):
        molecule_atoms.calc = GeoGNNCalculator.from_checkpoint(checkpoints[0], device=device)
        results.append((molecule_atoms.get_potential_energy(), molecule_atoms.get_forces()))
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-8)
    assert np.abs(results[1][1] - results[0][1]).max() < 1e-8


def test_checkpoints_record_whether_their_target_is_a_potential_energy(checkpoints, tmp_path):
    """The dataset declares its target; training stores it with the normalisation and the
    calculator reads that flag, falling back to the target's name for older checkpoints."""
    checkpoint = load_checkpoint(checkpoints[0])
    assert checkpoint["normalization"]["potential_energy"] is True
    legacy = dict(checkpoint, normalization={k: v for k, v in checkpoint["normalization"].items()
                                             if k != "potential_energy"})
    save_checkpoint(legacy, tmp_path / "legacy.pt")
    GeoGNNCalculator.from_checkpoint(tmp_path / "legacy.pt")  # "energy": a potential energy by name
    flagged = dict(checkpoint, normalization={**checkpoint["normalization"], "potential_energy": False})
    save_checkpoint(flagged, tmp_path / "flagged.pt")
    with pytest.raises(ValueError, match="not a potential energy"):
        GeoGNNCalculator.from_checkpoint(tmp_path / "flagged.pt")
