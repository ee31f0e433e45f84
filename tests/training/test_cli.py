"""The `geognn` command, called in-process: train, resume, evaluate, plot, and its error messages."""

import json

import pytest
import yaml

from geognn.cli import main
from geognn.training.runlog import read_log


@pytest.fixture
def recipe_file(qm9_recipe, tmp_path):
    config = qm9_recipe(optim={"max_epochs": 2})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def test_train_evaluate_plot(recipe_file, tmp_path, capsys):
    run_dir = tmp_path / "cli_run"
    assert main(["train", str(recipe_file), "--run-dir", str(run_dir), "--set", "optim.lr=0.002",
                 "--set", "data.batch_size=5"]) == 0
    printed = capsys.readouterr().out
    assert "stopped: finished after 8 steps" in printed and "test (5 structures" in printed and "meV" in printed
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.002

    assert main(["evaluate", str(run_dir / "best.pt"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    stored = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["energy_mae"] == pytest.approx(stored["energy_mae"], rel=1e-10)
    assert main(["evaluate", str(run_dir), "--split", "val"]) == 0
    assert capsys.readouterr().out.startswith("U0 on val (6 structures): U0 MAE")

    assert main(["plot", str(run_dir)]) == 0
    paths = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["learning_curves.png", "parity.png"]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_to_the_longer_budget(recipe_file, tmp_path, capsys):
    run_dir = tmp_path / "cli_resume"
    assert main(["train", str(recipe_file), "--run-dir", str(run_dir)]) == 0
    # A finished run can be extended: raise max_epochs in its config.yaml and resume.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["optim"]["max_epochs"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(run_dir)]) == 0
    steps = [row["step"] for row in read_log(run_dir) if row["split"] == "train"]
    assert steps == list(range(1, 16))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "RECIPE", "--set", "optim.lrr=1"], "unknown key 'optim.lrr'; did you mean lr?"),
        (["train", "RECIPE", "--set", "optim"], "expected KEY=VALUE"),
        (["train", "RECIPE", "--set", "data.batch_size=many"], "data.batch_size: expected int, got 'many'"),
        (["train", "missing.yaml"], "training recipe missing.yaml does not exist"),
        (["train", "--resume", "no_such_run"], "no_such_run has no config.yaml"),
        (["evaluate", "no_such.pt"], "checkpoint no_such.pt does not exist"),
        (["evaluate", "RECIPE"], "is a recipe, not a checkpoint: train it with `geognn train"),
        (["plot", "no_such_run"], "log.csv does not exist"),
    ],
)
def test_errors_are_one_clear_line(argv, message, recipe_file, capsys):
    argv = [str(recipe_file) if arg == "RECIPE" else arg for arg in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_threads_option_sets_torchs_threads_and_is_checked(capsys):
    """Every command takes --threads N (torch's CPU threads); 0 or a word is a usage error."""
    import torch

    from geognn.cli import build_parser

    parser = build_parser()
    for command in ("train", "compare", "evaluate", "plot", "md", "relax", "expressivity"):
        assert any("--threads" in action.option_strings for action in parser._subparsers._group_actions[0]
                   .choices[command]._actions), command
    before = torch.get_num_threads()
    try:
        assert main(["plot", "no_such_run", "--threads", "1"]) == 1  # the option is applied before the command runs
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            main(["plot", "no_such_run", "--threads", bad])
        assert "expected a positive integer" in capsys.readouterr().err


def _one_line_error(argv, capsys) -> str:
    assert main([str(arg) for arg in argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("weight, label", [("forces_weight", "forces"), ("stress_weight", "stress")])
def test_a_loss_term_without_labels_is_refused_before_training(weight, label, recipe_file, tmp_path, capsys):
    run_dir = tmp_path / "no_labels_run"
    err = _one_line_error(["train", recipe_file, "--run-dir", run_dir, "--set", f"loss.{weight}=1"], capsys)
    assert err.startswith(f"geognn train: error: loss.{weight} is 1.0 but no training structure of the qm9 dataset "
                          f"carries '{label}'; set loss.{weight}: 0, or train on ")
    assert not run_dir.exists()  # refused before the run started


def test_bad_model_sizes_are_one_line(recipe_file, capsys):
    err = _one_line_error(["train", recipe_file, "--set", "model.options.num_layers=-1"], capsys)
    assert "model.options: EGNNConfig.num_layers = -1 is out of range: it must be an integer >= 1" in err


@pytest.fixture
def untrained_run(qm9_recipe, tmp_path):
    """A run folder (config.yaml, best.pt) of an untrained EGNN whose training split held H, C, N and O."""
    from geognn.models import build_model, save_checkpoint
    from geognn.models.checkpoint import FORMAT_VERSION

    config = qm9_recipe()
    model = build_model("egnn", hidden_channels=8, num_layers=1, max_atomic_number=10).double()
    normalization = {"target": "U0", "unit": "eV", "intensive": False, "energy_scale": 1.0, "energy_shift": 0.0,
                     "atomic_reference": [0.0] * 11, "elements": [1, 6, 7, 8], "potential_energy": True}
    run_dir = tmp_path / "untrained_run"
    save_checkpoint({"format_version": FORMAT_VERSION, "model_name": "egnn", "model_config": vars(model.config).copy(),
                     "state_dict": model.state_dict(), "normalization": normalization,
                     "train_config": config.to_dict(), "metrics": {}}, run_dir / "best.pt")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    return run_dir


def _write(path, atoms, energy=None):
    import ase.io

    if energy is not None:
        atoms.info["energy"] = energy
    ase.io.write(path, atoms)
    return path


def test_evaluate_refuses_data_without_energies(untrained_run, tmp_path, capsys):
    from ase.build import molecule

    path = _write(tmp_path / "no_energy.extxyz", molecule("CH4"))
    err = _one_line_error(["evaluate", untrained_run, "--data", path], capsys)
    assert f"error: {path} has no 'energy' labels to compare the model's predictions with" in err


def test_evaluate_refuses_elements_the_model_was_not_trained_on(untrained_run, tmp_path, capsys):
    """As md and relax do: F lies inside the model's embedding (Z <= 10) but not among its training elements."""
    from ase.build import molecule

    path = _write(tmp_path / "hf.extxyz", molecule("HF"), energy=-1.0)
    err = _one_line_error(["evaluate", untrained_run, "--data", path], capsys)
    assert f"error: {path} contains F, which this model was not trained on (it knows H, C, N, O)" in err
    known = _write(tmp_path / "ch4.extxyz", molecule("CH4"), energy=-1.0)
    assert main(["evaluate", str(untrained_run), "--data", str(known)]) == 0
    assert capsys.readouterr().out.startswith("U0 on all (1 structures)")


@pytest.mark.parametrize("command", [["evaluate"], ["md", "STRUCTURE"], ["relax", "STRUCTURE"]])
def test_a_runs_config_yaml_given_as_checkpoint_names_the_run_folder(command, untrained_run, tmp_path, capsys):
    from ase.build import molecule

    structure = _write(tmp_path / "ch4.xyz", molecule("CH4"))
    argv = [structure if arg == "STRUCTURE" else arg for arg in command] + [untrained_run / "config.yaml"]
    err = _one_line_error(argv, capsys)
    assert (f"{untrained_run}/config.yaml is a training recipe, not a checkpoint; pass the run folder "
            f"{untrained_run} (its best.pt) or {untrained_run}/best.pt") in err
