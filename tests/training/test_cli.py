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
