"""`geognn md` and `geognn relax`: MD and relaxation from checkpoints, their summaries and their errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from geognn.cli import main
from geognn.dynamics import load_calculator, read_structure, run_md, run_relax
from geognn.training import TrainConfig, fit, from_dict

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "qm9_xtb_sample.extxyz"


def _train(run_dir: Path, seed: int, forces_weight: float = 10.0) -> Path:
    recipe = {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "data": {"dataset": "ase", "options": {"paths": str(SAMPLE)}, "split": [10, 3, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "forces_weight": forces_weight, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none", "ema_decay": None},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 100},
        "dtype": "float64", "seed": seed,
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the dataset's compositions determine only")
        return fit(from_dict(TrainConfig, recipe)).best_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn_runs")
    return {"a": _train(root / "a", 0), "b": _train(root / "b", 1), "energy_only": _train(root / "e", 0, 0.0)}


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "molecule.xyz"
    write(path, read(SAMPLE, index=8))  # C7H10N2
    return path


def test_nve_conserves_energy_and_writes_its_files(runs, structure, tmp_path):
    """NVE with a small time step conserves the total energy (forces are the exact gradient);
    the trajectory holds a frame per interval and the log a line per frame."""
    atoms = read_structure(structure)
    atoms.calc = load_calculator([runs["a"]])
    summary = run_md(atoms, steps=40, timestep_fs=0.25, temperature_K=300, trajectory=tmp_path / "md.traj",
                     logfile=tmp_path / "md.log", interval=10, progress=False)
    assert abs(summary.drift_per_atom) < 1e-4 and summary.time_fs == 10.0
    assert len(read(tmp_path / "md.traj", index=":")) == 5  # steps 0, 10, 20, 30, 40
    rows = np.loadtxt(tmp_path / "md.log")
    assert rows.shape == (5, 6) and rows[-1, 0] == 40
    np.testing.assert_allclose(rows[:, 4], rows[:, 2] + rows[:, 3], atol=2e-6)
    assert "NVE 40 steps" in summary.line() and "meV/atom" in summary.line()


def test_langevin_and_an_ensemble_log_the_force_spread(runs, structure, tmp_path):
    atoms = read_structure(structure)
    atoms.calc = load_calculator([runs["a"], runs["b"]])
    summary = run_md(atoms, steps=20, thermostat="langevin", logfile=tmp_path / "md.log", interval=5, progress=False)
    rows = np.loadtxt(tmp_path / "md.log")
    assert rows.shape == (5, 7) and (rows[:, 6] > 0).all()
    assert summary.max_force_std == pytest.approx(rows[:, 6].max(), rel=1e-4)
    assert "largest force spread" in summary.line() and "drift" not in summary.line()


def test_relax_lowers_the_energy_to_fmax(runs, structure, tmp_path):
    atoms = read_structure(structure)
    atoms.rattle(0.05, seed=0)
    atoms.calc = load_calculator([runs["a"]])
    summary = run_relax(atoms, fmax=0.05, steps=300, trajectory=tmp_path / "opt.traj", progress=False)
    assert summary.converged and summary.fmax < 0.05 and summary.final_energy < summary.initial_energy
    forces = atoms.get_forces()
    assert np.sqrt((forces ** 2).sum(1)).max() == pytest.approx(summary.fmax)
    fire = read_structure(structure)
    fire.calc = load_calculator([runs["a"]])
    assert run_relax(fire, fmax=0.05, steps=3, optimizer="fire", progress=False).steps == 3


def test_md_and_relax_commands(runs, structure, tmp_path, capsys):
    traj, log = tmp_path / "out" / "md.traj", tmp_path / "out" / "md.log"
    code = main(["md", str(structure), str(runs["a"]), "--steps", "20", "--timestep", "0.25", "--trajectory",
                 str(traj), "--log", str(log), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "C7H10N2: NVE 20 steps" in out and "total energy drift" in out and traj.exists()
    code = main(["relax", str(structure), str(runs["a"]), str(runs["b"]), "--fmax", "0.5", "--trajectory",
                 str(tmp_path / "opt.traj"), "--log", str(tmp_path / "opt.log"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "BFGS (positions) converged" in out and "final fmax" in out


def test_bad_input_gets_one_line(runs, structure, tmp_path, capsys):
    cases = [
        (["md", str(tmp_path / "missing.xyz"), str(runs["a"])], "structure file .* does not exist"),
        (["md", str(structure), str(tmp_path / "missing.pt")], "checkpoint .* does not exist"),
        (["relax", str(structure), str(runs["a"]), "--cell"], "relaxing the cell needs the stress of a periodic"),
    ]
    gold = tmp_path / "gold.xyz"
    write(gold, bulk("Au", "fcc", a=4.08))
    cases.append((["md", str(gold), str(runs["a"])], "Au"))
    junk = tmp_path / "junk.xyz"
    junk.write_text("not a structure\n")
    cases.append((["relax", str(junk), str(runs["a"])], "cannot read a structure"))
    for argv, message in cases:
        assert main(argv + ["--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"geognn {argv[0]}: error:")
        assert __import__("re").search(message, err), err


def test_a_checkpoint_trained_without_forces_warns(runs):
    with pytest.warns(UserWarning, match="trained without forces"):
        load_calculator([runs["energy_only"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_calculator([runs["a"]])
