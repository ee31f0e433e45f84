"""The training loop: it learns, it resumes to the same weights, and it fails loudly without losing work."""

import importlib.util
import json
import os
import signal
import warnings
from dataclasses import replace

import pytest
import torch

from geognn.models import load_checkpoint, model_from_checkpoint
from geognn.training import ConfigError, TrainingDiverged, fit, resume
from geognn.training.evaluate import evaluate_checkpoint
from geognn.training.runlog import read_log


class SimulatedKill(Exception):
    """Stands for the process dying: nothing is saved on the way out."""


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["training_state"]["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-12), key


def test_energy_training_learns_and_writes_a_run(qm9_recipe):
    config = qm9_recipe(data={"batch_size": 20}, optim={"max_epochs": 150, "lr": 0.005},
                        log={"eval_every": 50})
    result = fit(config)
    run_dir = result.run_dir
    assert result.stopped == "finished" and result.step == 150 and result.epoch == 150
    for name in ("config.yaml", "run.json", "log.csv", "last.pt", "best.pt", "test_metrics.json", "predictions_test.pt"):
        assert (run_dir / name).exists(), name
    rows = read_log(run_dir)
    train_losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert sum(train_losses[-20:]) < 0.5 * sum(train_losses[:20])  # training reduces the loss
    assert [row["step"] for row in rows if row["split"] == "val"] == [50, 100, 150]
    # The checkpoint follows DESIGN.md and loads with weights_only=True.
    best = load_checkpoint(run_dir / "best.pt")
    assert {"format_version", "model_name", "model_config", "state_dict", "normalization", "train_config",
            "metrics"} <= set(best)
    assert best["model_name"] == "egnn" and best["normalization"]["target"] == "U0"
    assert best["model_config"]["readout"] == "sum"
    # Test metrics printed by fit are those of the best checkpoint, reproducible by evaluate.
    stored = json.loads((run_dir / "test_metrics.json").read_text())
    assert stored["structures"] == 5 and stored["energy_mae"] == pytest.approx(result.test_metrics["energy_mae"])
    again = evaluate_checkpoint(run_dir / "best.pt", split="test")
    assert again["energy_mae"] == pytest.approx(stored["energy_mae"], rel=1e-10)
    model = model_from_checkpoint(run_dir / "best.pt")
    assert model.atomic_reference.dtype == torch.float64 and not model.training


def test_intensive_target_gets_a_mean_readout(qm9_recipe):
    recipe = qm9_recipe(data={"options": {"target": "gap"}}, optim={"max_epochs": 1},
                        model={"options": {"avg_num_neighbors": "auto"}})
    result = fit(recipe)
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint["model_config"]["readout"] == "mean"
    # "auto" is the mean neighbour count of the training molecules within the cutoff (QM9: most atoms).
    assert 5 < checkpoint["model_config"]["avg_num_neighbors"] < 20
    assert checkpoint["normalization"]["intensive"] and result.test_metrics["target"] == "gap"


@pytest.mark.parametrize("name, options", [
    ("gin", {"hidden_channels": 16, "num_layers": 2}),
    ("mpnn", {"hidden_channels": 8, "num_layers": 2, "edge_hidden": 16}),
])
def test_2d_models_train_through_the_same_recipe(qm9_recipe, name, options):
    """Bond-graph models (MPNN's structure-level Set2Set readout too) learn, checkpoint and evaluate
    like the 3D ones; an intensive target gets the mean readout."""
    config = qm9_recipe(model={"name": name}, data={"batch_size": 20},
                        optim={"max_epochs": 150, "lr": 0.005}, log={"eval_every": 50})
    config.model.options = dict(options)  # not merged with the EGNN options of the base recipe
    result = fit(config)
    rows = read_log(result.run_dir)
    train_losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert sum(train_losses[-20:]) < 0.5 * sum(train_losses[:20])
    assert evaluate_checkpoint(result.run_dir / "best.pt", split="test")["energy_mae"] == pytest.approx(
        result.test_metrics["energy_mae"], rel=1e-10)
    assert load_checkpoint(result.best_checkpoint)["model_name"] == name
    config = qm9_recipe(model={"name": name}, data={"options": {"target": "gap"}}, optim={"max_epochs": 1},
                        log={"run_dir": str(result.run_dir) + "_gap"})
    config.model.options = dict(options)
    gap = fit(config)
    assert load_checkpoint(gap.best_checkpoint)["model_config"]["readout"] == "mean"


@pytest.mark.filterwarnings("ignore:the dataset's compositions determine only")
def test_energy_force_training_reduces_force_error(xtb_recipe):
    recipe = xtb_recipe(model={"options": {"hidden_channels": 32, "num_layers": 3, "update_coords": False}},
                        data={"batch_size": 10}, optim={"max_epochs": 150, "lr": 0.005},
                        log={"log_every": 10, "eval_every": 50})
    trained = fit(recipe)
    forces = [row["forces_mae"] for row in read_log(trained.run_dir) if row["split"] == "train"]
    assert sum(forces[-3:]) < 0.8 * sum(forces[:3])
    assert {"energy_mae", "energy_per_atom_mae", "forces_mae", "forces_rmse"} <= set(trained.val_metrics)
    checkpoint = load_checkpoint(trained.best_checkpoint)
    # With forces the energy scale is the training force RMS (NequIP, MACE).
    assert checkpoint["normalization"]["energy_scale"] > 0.1


@pytest.mark.parametrize("stop_at", [3, 7])
def test_kill_and_resume_gives_the_uninterrupted_weights(qm9_recipe, tmp_path, stop_at):
    """Die mid-epoch (after the checkpoint at step 2 or 6), resume, and end where an unbroken run ends."""
    reference = fit(qm9_recipe(log={"run_dir": str(tmp_path / "unbroken")}))
    config = qm9_recipe(log={"run_dir": str(tmp_path / "broken")})

    def kill(trainer):
        if trainer.step == stop_at:
            raise SimulatedKill

    with pytest.raises(SimulatedKill):
        fit(config, callbacks=[kill])
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["training_state"]["step"] == stop_at - 1
    resumed = resume(tmp_path / "broken")
    assert resumed.step == reference.step == 15
    _assert_same_weights(_weights(reference.run_dir), _weights(resumed.run_dir))
    assert torch.equal(load_checkpoint(reference.run_dir / "last.pt")["state_dict"]["atomic_reference"],
                       load_checkpoint(resumed.run_dir / "last.pt")["state_dict"]["atomic_reference"])
    # The log reads as one run: every step once.
    steps = [row["step"] for row in read_log(resumed.run_dir) if row["split"] == "train"]
    assert steps == list(range(1, 16))
    assert resumed.test_metrics["energy_mae"] == pytest.approx(reference.test_metrics["energy_mae"], rel=1e-9)


@pytest.mark.filterwarnings("ignore:the dataset's compositions determine only")
def test_interrupt_saves_and_resumes(xtb_recipe, tmp_path):
    reference = fit(xtb_recipe(log={"run_dir": str(tmp_path / "unbroken")}))

    def ctrl_c(trainer):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the trainer's handler

    config = xtb_recipe(log={"run_dir": str(tmp_path / "broken"), "checkpoint_every": 100})
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest runs as a background job
    stopped = fit(config, callbacks=[ctrl_c])
    assert stopped.stopped == "interrupted" and stopped.step == 5  # it finishes the step it is in
    assert signal.getsignal(signal.SIGINT) is before  # and gives Ctrl-C back as it found it
    assert load_checkpoint(stopped.last_checkpoint)["training_state"]["step"] == 5
    resumed = resume(tmp_path / "broken")
    assert resumed.stopped == "finished"
    _assert_same_weights(_weights(reference.run_dir), _weights(resumed.run_dir))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(qm9_recipe):
    def poison(trainer):
        if trainer.step == 5:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5 .* last good checkpoint is .*last.pt"):
        fit(qm9_recipe(), callbacks=[poison])
    config = qm9_recipe()
    saved = load_checkpoint(f"{config.log.run_dir}/last.pt")
    assert saved["training_state"]["step"] == 5
    assert all(torch.isfinite(value).all() for value in saved["training_state"]["model"].values())
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values() if value.is_floating_point())


def test_bad_runs_say_what_is_wrong(qm9_recipe, tmp_path):
    with pytest.raises(ConfigError, match=r"model.options: unknown key 'EGNN.hiden_channels'; did you mean hidden_channels"):
        fit(qm9_recipe(model={"options": {"hiden_channels": 8}}))
    with pytest.raises(ConfigError, match="model.name must be one of egnn, .*schnet"):
        fit(qm9_recipe(model={"name": "shcnet"}))
    with pytest.raises(ConfigError, match=r"data.options: unknown option\(s\) \['sorce'\]"):
        fit(qm9_recipe(data={"options": {"sorce": "x"}}))
    missing_file = qm9_recipe(data={"dataset": "ase"})
    missing_file.data.options = {"paths": str(tmp_path / "nowhere.extxyz")}
    with pytest.raises(FileNotFoundError, match="nowhere.extxyz"):
        fit(missing_file)
    missing_xtb = qm9_recipe(data={"dataset": "qm9_xtb"})
    missing_xtb.data.options = {"root": str(tmp_path / "xtb")}
    with pytest.raises(FileNotFoundError, match=r"qm9_xtb.extxyz does not exist; run the recipe"):
        fit(missing_xtb)
    with pytest.raises(ConfigError, match="data.split"):
        fit(qm9_recipe(data={"split": [100, 10]}))
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit(qm9_recipe(), resume=True)
    config = qm9_recipe(optim={"max_steps": 2})
    fit(config)
    with pytest.raises(FileExistsError, match="already holds a run.*--resume"):
        fit(config)
    with pytest.raises(ConfigError, match="compile: torch.compile cannot differentiate twice"):
        qm9_recipe(loss={"forces_weight": 1.0})  # fine on its own ...
        replace(qm9_recipe(loss={"forces_weight": 1.0}), compile=True).__post_init__()


def test_early_stopping_and_max_steps(qm9_recipe):
    result = fit(qm9_recipe(optim={"max_epochs": 50, "lr": 1e-12, "early_stopping_patience": 2}))
    assert result.stopped == "early_stopping" and result.epoch < 50
    rows = [row for row in read_log(result.run_dir) if row["split"] == "val"]
    assert len(rows) == 3  # the first sets the best; two without improvement stop the run
    limited = fit(qm9_recipe(optim={"max_steps": 7}, log={"run_dir": str(result.run_dir) + "_steps"}))
    assert limited.step == 7 and limited.stopped == "finished"


def test_tensorboard_when_installed_else_a_warning(qm9_recipe):
    config = qm9_recipe(optim={"max_steps": 2}, log={"tensorboard": True})
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(UserWarning, match="tensorboard is not installed; writing log.csv only"):
            result = fit(config)
    else:
        result = fit(config)
        assert any((result.run_dir / "tensorboard").iterdir())
    assert [row["step"] for row in read_log(result.run_dir) if row["split"] == "train"] == [1, 2]


def test_start_summary_and_plain_progress_lines(qm9_recipe, capsys):
    """With progress on and stderr not a terminal (pytest, CI, nohup): one summary line before
    the first step (model, parameters, device, split sizes, target, budget, run folder), then a
    line per log_every steps and per evaluation, and no carriage returns."""
    from geognn.training import fit

    config = qm9_recipe(log={"progress": True, "log_every": 2}, optim={"max_steps": 5})  # one epoch: 5 batches
    result = fit(config)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err
    assert lines[0].startswith("egnn: ") and "parameters, float64 on cpu" in lines[0]
    assert "train 20 / val 6 / test 5 structures" in lines[0] and "target U0 (eV)" in lines[0]
    assert "5 steps of batch 4" in lines[0] and str(result.run_dir) in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("step ") and "loss" in line and "val" not in line] \
        == ["2/5", "4/5"]
    assert any("val loss" in line for line in lines)


def test_plots_label_the_target_and_units_and_skip_a_duplicate_loss(qm9_recipe, xtb_recipe, monkeypatch, tmp_path):
    """Energy-only runs: one error panel named after the target (its loss would repeat it) plus
    the learning rate; energy+force runs add the combined loss. Parity axes carry units."""
    from geognn.training import plots

    figures = {}

    def keep(plt, figure, title, path):
        figures[path.name] = [(axis.get_xlabel(), axis.get_ylabel()) for axis in figure.axes]
        plt.close(figure)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    energy_run = fit(qm9_recipe(optim={"max_steps": 3})).run_dir
    plots.plot_run(energy_run, tmp_path / "a")
    assert [y for _, y in figures["learning_curves.png"]] == ["U0 MAE [meV]", "learning rate"]
    assert figures["parity.png"][0] == ("reference energy − Σ element references [meV]",
                                        "predicted energy − Σ element references [meV]")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the dataset's compositions determine only")
        force_run = fit(xtb_recipe(optim={"max_steps": 3})).run_dir
    plots.plot_run(force_run, tmp_path / "b")
    assert [y for _, y in figures["learning_curves.png"]] == ["loss (weighted sum)", "energy MAE [meV]",
                                                               "force MAE [meV/Å]", "learning rate"]
    assert figures["parity.png"][1][1] == "predicted force component [meV/Å]"


def test_evaluation_and_best_checkpoint_use_the_ema_weights(qm9_recipe):
    """With an EMA the validation metrics are those of the averaged weights, and best.pt holds
    them (not the raw weights the optimiser moves); the raw ones stay in last.pt's training state."""
    result = fit(qm9_recipe(optim={"max_steps": 5, "ema_decay": 0.5}))  # one epoch: validated at step 5
    last, best = load_checkpoint(result.last_checkpoint), load_checkpoint(result.best_checkpoint)
    assert best["metrics"]["step"] == 5
    shadow = last["training_state"]["ema"]["shadow"]
    raw = last["training_state"]["model"]
    name = next(k for k in shadow if not torch.equal(shadow[k], raw[k]))  # the average differs from the raw weights
    for key, value in shadow.items():
        assert torch.equal(best["state_dict"][key], value), key
    assert not torch.equal(best["state_dict"][name], raw[name])
    val = [row for row in read_log(result.run_dir) if row["split"] == "val" and row["step"] == 5][0]
    again = evaluate_checkpoint(result.best_checkpoint, split="val")
    assert again["energy_mae"] == pytest.approx(val["energy_mae"], rel=1e-6)  # log.csv keeps 8 digits


def test_unused_parameter_probe_for_ddp(qm9_recipe, tmp_path):
    """DDP searches for parameters without gradients only where a model has them: EGNN's last
    coordinate update never reaches the energy; without coordinate updates every weight does."""
    from geognn.training.trainer import Trainer

    options = {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}
    with_updates = Trainer(qm9_recipe(model={"name": "egnn", "options": {**options, "update_coords": True}}))
    assert with_updates._has_unused_parameters() is True
    with_updates.close()
    without = Trainer(qm9_recipe(model={"name": "egnn", "options": {**options, "update_coords": False}},
                                 log={"run_dir": str(tmp_path / "b")}))
    assert without._has_unused_parameters() is False
    without.close()


def test_no_progress_keeps_the_start_line_and_validation_lines(qm9_recipe, capsys):
    """log.progress: false drops the step lines only: the start-up line (with the CPU thread
    count) and one line per validation are still printed, so a long run is never silent."""
    from geognn.training import fit

    fit(qm9_recipe(log={"progress": False, "log_every": 1}, optim={"max_steps": 5}))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("egnn: ") and f"float64 on cpu ({torch.get_num_threads()} threads)" in lines[0]
    assert sum("val loss" in line for line in lines) >= 1
    assert not any(line.startswith("step ") and "val" not in line for line in lines)


def test_time_budget_counts_the_sessions_before_a_resume(qm9_recipe, capsys):
    """optim.max_minutes is the whole run's training time: a resumed run starts with what its
    earlier sessions used, and its start-up line says so."""
    from geognn.training import fit
    from geognn.training.trainer import Trainer

    first = fit(qm9_recipe(optim={"max_steps": 2}))
    used = torch.load(first.last_checkpoint, weights_only=True)["training_state"]["wall_s"]
    capsys.readouterr()
    config = qm9_recipe(optim={"max_steps": 4, "max_minutes": 30})
    trainer = Trainer(config, resume=True)
    try:
        assert trainer.wall_offset == used > 0
        assert f"at most 30 min of training ({trainer.wall_offset / 60:.1f} used before this resume)" \
            in trainer.summary()
        assert trainer._wall() >= trainer.wall_offset
    finally:
        trainer.close()


def test_cpu_time_is_logged_and_carried_over_a_resume(qm9_recipe):
    """log.csv gains cpu_s, the training process's CPU time: it grows row by row, a resumed run
    continues from the checkpoint's value (not from zero), and a log written before the column
    existed is rewritten under the new header when a resume appends to it."""
    import csv

    from geognn.training import fit
    from geognn.training.runlog import COLUMNS, read_log

    first = fit(qm9_recipe(optim={"max_steps": 2}, log={"log_every": 1, "eval_every": 1}))
    run_dir = first.last_checkpoint.parent
    rows = read_log(run_dir)
    cpu = [row["cpu_s"] for row in rows]
    assert cpu == sorted(cpu) and cpu[-1] > 0
    saved = torch.load(first.last_checkpoint, weights_only=True)["training_state"]["cpu_s"]
    assert saved >= cpu[-1] - 0.005  # the log rounds to 10 ms
    # As an older geognn wrote it: no cpu_s column.
    with open(run_dir / "log.csv", newline="") as handle:
        old = [{k: v for k, v in row.items() if k != "cpu_s"} for row in csv.DictReader(handle)]
    with open(run_dir / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in COLUMNS if c != "cpu_s"])
        writer.writeheader()
        writer.writerows(old)
    fit(qm9_recipe(optim={"max_steps": 4}, log={"log_every": 1, "eval_every": 1}), resume=True)
    with open(run_dir / "log.csv", newline="") as handle:
        assert next(csv.reader(handle)) == COLUMNS
    resumed = [row for row in read_log(run_dir) if row["step"] > 2]
    assert resumed and all(row["cpu_s"] > saved for row in resumed)
