"""Training on a user's own extxyz: mixed labels, given per-element energies, separate test files,
stress in every report, and the one-line errors raised before anything is written."""

import json

import ase.io
import pytest
import torch
from torch_geometric.loader import DataLoader

from geognn.data import ASEDataset, keys
from geognn.data.labels import label_counts
from geognn.data.stats import fit_element_energies, force_rms
from geognn.training import ConfigError, ErrorStats, Loss, Trainer, fit
from geognn.training.config import LossSection
from geognn.training.evaluate import evaluate_checkpoint
from geognn.training.loss import prediction_errors

from conftest import _builder, _common


@pytest.fixture
def emt_files(tmp_path, emt_crystals):
    """train.extxyz: 12 EMT crystals with stress, 6 clusters without, 2 isolated atoms; test.extxyz: 4 crystals."""
    files = {"train": tmp_path / "train.extxyz", "test": tmp_path / "test.extxyz",
             "clusters": tmp_path / "clusters.extxyz"}
    ase.io.write(files["train"], emt_crystals.make_frames(12, seed=0, clusters=6, isolated=True), format="extxyz")
    ase.io.write(files["test"], emt_crystals.make_frames(4, seed=1), format="extxyz")
    ase.io.write(files["clusters"], emt_crystals.make_frames(0, seed=2, clusters=4), format="extxyz")
    return files


@pytest.fixture
def emt_recipe(tmp_path, emt_files):
    data = {"dataset": "ase", "options": {"paths": [str(emt_files["train"])]}, "split": [14, 4], "batch_size": 4}
    loss = {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 100.0, "energy_per_atom": True}
    common = _common(tmp_path / "run_emt")
    common["model"] = {"name": "painn", "options": {"hidden_channels": 8, "num_layers": 1, "num_radial": 4}}
    return _builder({**common, "data": data, "loss": loss, "optim": {**common["optim"], "max_steps": 4}})


def _model(dtype=torch.float64):
    from geognn.models import build_model

    torch.manual_seed(0)
    return build_model("painn", hidden_channels=8, num_layers=1, num_radial=4).to(dtype).eval()


def test_masked_errors_equal_those_of_the_labelled_structures(emt_files):
    """Errors of a mixed batch are exactly those of its labelled structures computed alone; the
    counts (and so every mean) leave the unlabelled ones out."""
    dataset = ASEDataset(emt_files["train"], cache=False, dtype=torch.float64)
    model = _model()
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    errors = prediction_errors(model(batch, compute_forces=True, compute_stress=True), batch, True, True)
    with_stress = [k for k in range(len(dataset)) if bool(dataset[k][keys.LABEL_MASK][0, 2])]
    assert len(with_stress) == 12 and errors["stress"].shape == (12, 3, 3)
    alone = next(iter(DataLoader(dataset.index_select(torch.tensor(with_stress)), batch_size=12)))
    expected = prediction_errors(model(alone, compute_forces=True, compute_stress=True), alone, True, True)
    assert torch.allclose(errors["stress"], expected["stress"], atol=1e-12)
    assert bool(torch.isfinite(errors["stress"]).all())
    assert errors["energy"].shape == (len(dataset),) and errors["forces"].shape[0] == batch.num_nodes
    stats = ErrorStats()
    stats.update(errors)
    assert stats.totals[3, 2] == 12 * 9  # stress: 9 components of each labelled structure
    sums = Loss(LossSection(stress_weight=1.0)).sums(errors)
    assert sums["stress"][1] == 12 * 9


def test_statistics_skip_missing_labels(tmp_path, emt_crystals):
    """Element energies and the force RMS of a file whose frames lack some labels equal those of
    its labelled frames alone (the zeros standing in for missing labels would shift both)."""
    frames = emt_crystals.make_frames(10, seed=5)
    for atoms in frames[::3]:  # every third frame without forces, the others without energy
        atoms.calc.results.pop("forces")
    for atoms in frames[1::3]:
        atoms.calc.results.pop("energy")
    path = tmp_path / "holes.extxyz"
    ase.io.write(path, frames, format="extxyz")
    dataset = ASEDataset(path, cache=False, dtype=torch.float64)
    assert label_counts(dataset) == {keys.ENERGY: 7, keys.FORCES: 6, keys.STRESS: 10}
    energies = [k for k in range(10) if k % 3 != 1]
    forces = [k for k in range(10) if k % 3 != 0]
    assert torch.allclose(fit_element_energies(dataset), fit_element_energies(dataset.index_select(torch.tensor(energies))))
    reference = torch.cat([torch.as_tensor(frames[k].get_forces()) for k in forces])
    assert force_rms(dataset) == pytest.approx(float(reference.square().mean().sqrt()), rel=1e-6)
    assert label_counts(dataset.index_select(torch.tensor(forces))) == {keys.ENERGY: 3, keys.FORCES: 6, keys.STRESS: 6}
    # and the errors of a batch hold exactly the labelled structures' energies and atoms' forces
    batch = next(iter(DataLoader(dataset, batch_size=10)))
    out = _model()(batch, compute_forces=True)
    errors = prediction_errors(out, batch, True, False)
    assert errors["energy"].shape == (7,) and errors["forces"].shape == (sum(len(frames[k]) for k in forces), 3)
    atoms = torch.cat([torch.full((len(frames[k]),), k in forces) for k in range(10)])
    assert torch.equal(errors["forces"], out["forces"][atoms] - batch["forces"][atoms])


def test_mixed_labels_train_and_report_counts(emt_recipe, capsys):
    config = emt_recipe(data={"atom_reference": "isolated"})
    trainer = Trainer(config)
    assert trainer.label_counts == {keys.ENERGY: 14, keys.FORCES: 14, keys.STRESS: trainer.label_counts[keys.STRESS]}
    assert 0 < trainer.label_counts[keys.STRESS] < 14
    assert f"{trainer.label_counts[keys.STRESS]} with stress" in trainer.summary()
    # the isolated atoms' energies are the model's per-element references
    source = ASEDataset(config.data.options["paths"][0], cache=False)
    for z, energy in source.isolated_atom_energies.items():
        assert float(trainer.model.atomic_reference[z]) == pytest.approx(energy)
    trainer.run()
    for name in ("energy_mae", "forces_mae", "stress_mae"):  # validation, with stress on its crystals only
        assert 0 < trainer.val_metrics[name] < float("inf")


def test_given_element_energies(emt_recipe):
    trainer = Trainer(emt_recipe(data={"atom_reference": {"Cu": -1.5, "Al": 0.25}}))
    assert float(trainer.model.atomic_reference[29]) == -1.5 and float(trainer.model.atomic_reference[13]) == 0.25
    with pytest.raises(ConfigError, match="no entry in data.atom_reference for Al"):
        Trainer(emt_recipe(data={"atom_reference": {"Cu": -1.5}}))
    with pytest.raises(ConfigError, match="'Xx' is not an element"):
        emt_recipe(data={"atom_reference": {"Xx": 1.0}})


def test_separate_test_file_is_evaluated_at_the_end(emt_recipe, emt_files):
    config = emt_recipe(data={"test_paths": [str(emt_files["test"])]})
    result = fit(config)
    metrics = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert metrics["stress_mae"] > 0 and metrics["forces_mae"] > 0
    direct = evaluate_checkpoint(result.best_checkpoint, data=str(emt_files["test"]))
    assert direct["energy_mae"] == pytest.approx(metrics["energy_mae"], rel=1e-9)
    assert direct["stress_mae"] == pytest.approx(metrics["stress_mae"], rel=1e-9)
    # a file of clusters as the test set: no stress there, and none reported
    config = emt_recipe(data={"test_paths": [str(emt_files["clusters"])]}, log={"run_dir": str(result.run_dir) + "_2"})
    clusters = json.loads((fit(config).run_dir / "test_metrics.json").read_text())
    assert "stress_mae" not in clusters and clusters["forces_mae"] > 0
    # separate validation files: every training structure trains
    trainer = Trainer(emt_recipe(data={"val_paths": str(emt_files["test"])}, log={"run_dir": str(result.run_dir) + "_3"}))
    assert (len(trainer.train_set), len(trainer.val_set), len(trainer.test_set)) == (18, 4, 0)
    with pytest.raises(ConfigError, match="makes a test part, but data.test_paths"):
        Trainer(emt_recipe(data={"split": [10, 4, 4], "test_paths": [str(emt_files["test"])]},
                           log={"run_dir": str(result.run_dir) + "_4"}))


@pytest.mark.parametrize("key", ["stress", "forces"])
def test_missing_label_is_one_line_before_anything_is_written(emt_recipe, emt_files, key, tmp_path, capsys):
    """A loss term whose label no training structure carries (a file of clusters with a stress
    weight; forces_key null with a force weight): one line naming the key and the file, and no
    run folder."""
    import yaml

    from geognn.cli import main

    data = emt_recipe().to_dict()
    if key == "stress":
        data["data"]["options"]["paths"] = [str(emt_files["clusters"])]
        data["data"]["split"] = [2, 2]
    else:
        data["data"]["options"]["forces_key"] = None
    data["log"]["run_dir"] = str(tmp_path / "never")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path)]) == 1
    assert not (tmp_path / "never").exists()
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    name = "clusters.extxyz" if key == "stress" else "train.extxyz"
    setting = "stress_key is 'stress'" if key == "stress" else "forces_key is null"
    assert f"loss.{key}_weight" in error[0] and setting in error[0] and name in error[0]


def test_evaluate_reports_stress(emt_recipe, emt_files, capsys):
    from geognn.cli import main

    result = fit(emt_recipe())
    assert main(["evaluate", str(result.run_dir), "--data", str(emt_files["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["labelled"] == {"energy": 4, "forces": 4, "stress": 4}
    assert metrics["stress_mae"] > 0 and metrics["stress_rmse"] >= metrics["stress_mae"]
    # the figure is the mean |error| over the 9 components of each structure's stress
    from geognn.calculator import GeoGNNCalculator

    calculator = GeoGNNCalculator.from_checkpoint(result.run_dir, dtype="float64")
    errors = []
    for atoms in ase.io.read(emt_files["test"], ":"):
        reference = atoms.get_stress(voigt=False)
        atoms.calc = calculator
        errors.append(abs(atoms.get_stress(voigt=False) - reference).mean())
    assert metrics["stress_mae"] == pytest.approx(sum(errors) / len(errors), rel=1e-6)


def test_the_readme_own_data_command_runs(tmp_path, emt_crystals):
    """The README's own-data command, verbatim, in a folder holding the recipe and a user's file
    (the EMT sample), with a budget of a few steps appended (the recipe's own is 10 minutes)."""
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    command = re.search(r"<!-- own-data-command[^>]*-->\n```bash\n(.*?)\n```", readme).group(1)
    assert command.startswith("geognn train train/own_data.yaml")
    (tmp_path / "train").symlink_to(root / "train")
    ase.io.write(tmp_path / "train.extxyz", emt_crystals.make_frames(12, seed=7, clusters=3), format="extxyz")
    arguments = shlex.split(command)[1:] + ["--set", "optim.max_steps=2", "--set", "model.options.num_layers=1",
                                            "--set", "model.options.num_features=8"]
    done = subprocess.run([sys.executable, "-m", "geognn", *arguments], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"train 13 \(13 with energy, 13 with forces, \d+ with stress\)", done.stderr), done.stderr[-2000:]
    assert (tmp_path / "runs" / "own_data" / "best.pt").exists()
