"""`geognn compare`: identical conditions for every model, resumable, reproducible, three leaderboard files."""

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from geognn.cli import main
from geognn.training import ConfigError
from geognn.training import compare as compare_module
from geognn.training.compare import compare, measure_method, parse_compare, run_row, summarize, write_leaderboard

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"


def tiny_recipe(run_dir, **changes):
    recipe = {
        "models": {
            "egnn": {"hidden_channels": 8, "num_layers": 1, "num_radial": 4},
            "egnn-wide": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 1, "num_radial": 4}},
            "gin": {"hidden_channels": 8, "num_layers": 2},
        },
        "seeds": [0, 1],
        "data": {"dataset": "qm9", "options": {"root": str(run_dir.parent / "qm9"), "source": str(SAMPLES / "qm9_xyz"),
                                                "target": "U0"},
                 "split": [20, 6, 5], "batch_size": 10},
        "optim": {"lr": 0.005, "max_epochs": 3, "scheduler": "none"},
        "log": {"run_dir": str(run_dir), "progress": False},
        "dtype": "float64",
    }
    recipe.update(changes)
    return recipe


def test_compare_trains_every_model_and_seed_and_writes_the_leaderboard(tmp_path):
    config = parse_compare(tiny_recipe(tmp_path / "cmp"))
    rows, files = compare(config, log=lambda *_: None)
    assert [(r["model"], r["seed"]) for r in rows] == [(m, s) for m in ("egnn", "egnn-wide", "gin") for s in (0, 1)]
    assert {f.name for f in files} == {"report.md", "leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    for row in rows:
        run = tmp_path / "cmp" / row["model"] / f"seed{row['seed']}"
        stored = json.loads((run / "test_metrics.json").read_text())
        assert row["energy_mae"] == stored["energy_mae"] and row["inference_per_s"] > 0 and row["peak_memory_mb"] >= 0
        assert json.loads((run / "run.json").read_text())["parameters"] == row["parameters"]
    # Identical conditions: the same data split and budget; the seed changes the initial weights.
    by_seed = {(r["model"], r["seed"]): r["energy_mae"] for r in rows}
    assert by_seed[("egnn", 0)] != by_seed[("egnn", 1)]
    # The summary is the mean and sample std over seeds, best first.
    summary = {s["model"]: s for s in summarize(rows)}
    maes = [by_seed[("gin", 0)], by_seed[("gin", 1)]]
    assert summary["gin"]["energy_mae"] == pytest.approx(sum(maes) / 2)
    assert summary["gin"]["energy_mae_std"] == pytest.approx(abs(maes[0] - maes[1]) / math.sqrt(2))
    table = (tmp_path / "cmp" / "leaderboard.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "test MAE (meV)" in table[0]
    ranked = [line.split("|")[2].strip() for line in table[2:]]
    assert ranked == sorted(summary, key=lambda m: summary[m]["energy_mae"])
    with open(tmp_path / "cmp" / "leaderboard.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6

    # A rerun trains nothing and gives the same rows; a second folder with the same seeds, the same numbers.
    said = []
    again, _ = compare(config, log=said.append)
    assert all("finished already" in line for line in said)
    assert [r["energy_mae"] for r in again] == [r["energy_mae"] for r in rows]
    fresh, _ = compare(parse_compare(tiny_recipe(tmp_path / "cmp2")), measure=False, log=lambda *_: None)
    assert [r["energy_mae"] for r in fresh] == pytest.approx([r["energy_mae"] for r in rows], rel=1e-12, abs=0)


def fake_run(run_dir, energy_mae, forces_mae, parameters=1000):
    """A finished run folder as `fit` leaves it, with the files `run_row` reads (errors in eV)."""
    run_dir.mkdir(parents=True)
    (run_dir / "test_metrics.json").write_text(json.dumps(
        {"unit": "eV", "energy_mae": energy_mae, "forces_mae": forces_mae, "step": 10}))
    (run_dir / "run.json").write_text(json.dumps({"parameters": parameters}))
    (run_dir / "log.csv").write_text("step,split,wall_s\n5,train,1.0\n10,val,2.0\n")
    return run_dir


def test_leaderboard_std_of_each_error_is_over_that_error(tmp_path):
    """The energy and force columns are each the mean ± sample std over seeds of their own MAEs. The
    numbers make every std differ (energy std 10 meV, force std 173.2 meV/Å for "wide"), so the
    std of one error reported for the other shows."""
    maes = {"wide": ([0.010, 0.030, 0.020], [0.1, 0.1, 0.4]), "narrow": ([0.050, 0.070, 0.090], [0.5, 0.6, 0.7])}
    rows = [run_row(label, seed, fake_run(tmp_path / label / f"seed{seed}", energy, forces), "cpu", measure=False)
            for label, (energies, force_maes) in maes.items()
            for seed, (energy, forces) in enumerate(zip(energies, force_maes))]
    summary = {s["model"]: s for s in summarize(rows)}
    for label, (energies, force_maes) in maes.items():
        assert summary[label]["energy_mae"] == pytest.approx(statistics.mean(energies), rel=1e-12)
        assert summary[label]["energy_mae_std"] == pytest.approx(statistics.stdev(energies), rel=1e-12)
        assert summary[label]["forces_mae"] == pytest.approx(statistics.mean(force_maes), rel=1e-12)
        assert summary[label]["forces_mae_std"] == pytest.approx(statistics.stdev(force_maes), rel=1e-12)
    write_leaderboard(rows, tmp_path)
    table = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert "test force MAE (meV/Å)" in table[0]
    cells = {line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")[4:6]] for line in table[2:]}
    assert cells["wide"] == ["20.0 ± 10.0", "200.0 ± 173.2"]
    assert cells["narrow"] == ["70.0 ± 20.0", "600.0 ± 100.0"]


def test_interrupted_runs_resume(tmp_path, monkeypatch):
    """A run folder with last.pt but no test metrics is resumed, not restarted."""
    import geognn.training.trainer as trainer_module

    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0])
    recipe["models"] = {"gin": recipe["models"]["gin"]}
    config = parse_compare(recipe)
    compare(config, measure=False, log=lambda *_: None)
    (config.run_dir("gin", 0) / "test_metrics.json").unlink()
    calls = []
    real_fit = trainer_module.fit
    monkeypatch.setattr(trainer_module, "fit", lambda cfg, resume=False: calls.append(resume) or real_fit(cfg, resume))
    compare(config, measure=False, log=lambda *_: None)
    assert calls == [True]


def test_bad_comparison_recipes_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="'models'"):
        parse_compare({**tiny_recipe(tmp_path / "c"), "model": {"name": "egnn"}})
    with pytest.raises(ConfigError, match="not a model"):
        parse_compare(tiny_recipe(tmp_path / "c", models={"shcnet": {}}))
    with pytest.raises(ConfigError, match="seeds"):
        parse_compare(tiny_recipe(tmp_path / "c", seeds=[0, 0]))
    with pytest.raises(ConfigError, match="optim.lrr"):
        parse_compare({**tiny_recipe(tmp_path / "c"), "optim": {"lrr": 1.0}})
    bad = parse_compare(tiny_recipe(tmp_path / "c", loss={"forces_weight": 1.0}))
    with pytest.raises(ConfigError, match="no training structure of .* carries 'forces'"):
        compare(bad, log=lambda *_: None)  # refused before any model trains
    assert not (tmp_path / "c" / "egnn" / "seed0" / "last.pt").exists()
    only_2d = tiny_recipe(tmp_path / "c", loss={"forces_weight": 1.0})
    only_2d["models"] = {"gin": only_2d["models"]["gin"]}
    with pytest.raises(ConfigError, match="no model of the comparison can train this loss.*does not use positions"):
        compare(parse_compare(only_2d), log=lambda *_: None)


def test_command_line(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0])
    recipe["models"] = {"egnn": recipe["models"]["egnn"], "gin": recipe["models"]["gin"]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compare", str(path), "--set", "optim.max_epochs=2", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "| 1 |" in out and "leaderboard.png" in out


def test_only_runs_the_named_models_and_the_report_then_gathers_them(tmp_path, capsys):
    """--only trains just the named models (one job per model) and writes no report; a call
    without it finds them finished, trains the rest, and reports all. The CPU time of each run is
    in the leaderboard."""
    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0])
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compare", str(path), "--only", "egnn,gin", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "no report with --only" in out and "egnn seed 0: finished" in out and "gin seed 0: finished" in out
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"egnn", "gin"}
    assert main(["compare", str(path), "--only", "schnet", "--no-measure"]) != 0
    assert "--only schnet: not a model of this recipe (its models: egnn, egnn-wide, gin)" in capsys.readouterr().err
    said = []
    rows, files = compare(parse_compare(recipe), measure=False, log=said.append)
    assert [line.split(":")[0] for line in said] == ["egnn seed 0", "egnn-wide seed 0", "gin seed 0"]
    assert "finished already" in said[0] and "training" in said[1] and "finished already" in said[2]
    table = (tmp_path / "cmp" / "leaderboard.md").read_text().splitlines()
    column = table[0].split("|").index(" CPU time (s) ")
    shown = {line.split("|")[2].strip(): float(line.split("|")[column]) for line in table[2:]}
    assert shown == {row["model"]: round(row["cpu_s"]) for row in rows}
    with open(tmp_path / "cmp" / "leaderboard.csv", newline="") as handle:
        assert all(float(row["cpu_s"]) > 0 for row in csv.DictReader(handle))
    assert all(0 < row["cpu_s"] <= 2 * row["train_s"] + 1 for row in rows), [(r["cpu_s"], r["train_s"]) for r in rows]


# ------------------------------------------------------------------ runs of another recipe


def finished_like(config, label, seed, energy_mae=0.05, interrupted=False, **changes):
    """A run folder as `fit` leaves it for ``config.run_config(label, seed)``, except for ``changes``
    (``{"optim": {"lr": 0.001}}``) to the stored recipe: what an earlier comparison left."""
    import torch

    def merge(base, more):
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) else v for k, v in more.items()}}

    run_dir = config.run_dir(label, seed)
    run_dir.mkdir(parents=True)
    stored = merge(config.run_config(label, seed).to_dict(), changes)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    if interrupted:
        torch.save({}, run_dir / "last.pt")
        return run_dir
    fake_run(run_dir.parent / "scratch", energy_mae, None)
    for item in (run_dir.parent / "scratch").iterdir():
        item.rename(run_dir / item.name)
    (run_dir.parent / "scratch").rmdir()
    return run_dir


def no_training(monkeypatch):
    import geognn.training.trainer as trainer_module

    def fail(*args, **kwargs):
        raise AssertionError("a run was trained")

    monkeypatch.setattr(trainer_module, "fit", fail)


@pytest.mark.parametrize("changes, named", [
    ({"optim": {"lr": 0.001}}, "optim.lr: 0.001 -> 0.005 (every run)"),
    ({"optim": {"max_minutes": 1.5}}, "optim.max_minutes: 1.5 -> null (every run)"),
])
def test_finished_runs_of_another_recipe_are_refused_naming_the_change(tmp_path, monkeypatch, changes, named):
    """The user's report: lr or the time budget changed and every run said "finished already". Now
    nothing trains, nothing moves, and the one-line error names the setting, both values and the
    two ways on."""
    config = parse_compare(tiny_recipe(tmp_path / "cmp"))
    runs = [finished_like(config, label, seed, **changes) for label in config.models for seed in config.seeds]
    no_training(monkeypatch)
    with pytest.raises(FileExistsError) as refused:
        compare(config, measure=False, log=lambda *_: None)
    message = str(refused.value)
    assert named in message and "6 run(s)" in message
    assert "--run-dir" in message and "--rerun-changed" in message and "\n" not in message
    assert all((run / "test_metrics.json").exists() for run in runs)
    assert not list((tmp_path / "cmp").glob("*/*.replaced-*"))


def test_a_changed_model_option_names_the_option_and_the_model(tmp_path, monkeypatch):
    """SchNet 64 -> 32 channels in the report; here egnn 64 (its default, left out now) -> 8 for
    one model while the other models' runs still match."""
    config = parse_compare(tiny_recipe(tmp_path / "cmp"))
    for label in config.models:
        for seed in config.seeds:
            changes = {"model": {"options": {"hidden_channels": 64}}} if label == "egnn" else {}
            finished_like(config, label, seed, **changes)
    no_training(monkeypatch)
    with pytest.raises(FileExistsError, match=r"^2 run\(s\) .*: model\.options\.hidden_channels: 64 -> 8 \(egnn\);"):
        compare(config, measure=False, log=lambda *_: None)


def test_an_interrupted_run_of_another_recipe_is_not_resumed(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0, 1])
    recipe["models"] = {"gin": recipe["models"]["gin"]}
    config = parse_compare(recipe)
    finished_like(config, "gin", 0)
    finished_like(config, "gin", 1, interrupted=True, data={"batch_size": 4})
    no_training(monkeypatch)
    with pytest.raises(FileExistsError, match=r"data\.batch_size: 4 -> 10 \(gin seed 1\)"):
        compare(config, measure=False, log=lambda *_: None)


def test_an_identical_recipe_reuses_finished_runs(tmp_path, monkeypatch):
    """Only the settings that do not change results differ (progress bar, log and checkpoint
    intervals, workers, and the folder, as after moving the comparison): nothing trains."""
    config = parse_compare(tiny_recipe(tmp_path / "cmp"))
    watched = {"log": {"progress": True, "log_every": 7, "checkpoint_every": 3, "tensorboard": True,
                       "run_dir": "/elsewhere"}, "data": {"num_workers": 2}}
    maes = {}
    for k, (label, seed) in enumerate((label, seed) for label in config.models for seed in config.seeds):
        maes[(label, seed)] = 0.01 * (k + 1)
        finished_like(config, label, seed, energy_mae=maes[(label, seed)], **watched)
    no_training(monkeypatch)
    said = []
    rows, _ = compare(config, measure=False, log=said.append)
    assert len(said) == 6 and all("finished already" in line for line in said)
    assert {(row["model"], row["seed"]): row["energy_mae"] for row in rows} == maes


def test_rerun_changed_keeps_the_old_run_and_trains_again(tmp_path, capsys):
    """From the command line: refused without the flag; with it the old folder is renamed
    seed0.replaced-1 (its results kept) and the run is trained under the recipe given now."""
    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0])
    recipe["models"] = {"gin": recipe["models"]["gin"]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    config = parse_compare(recipe)
    old = finished_like(config, "gin", 0, energy_mae=123.0, optim={"lr": 0.001})

    assert main(["compare", str(path), "--no-measure"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.lr: 0.001 -> 0.005 (gin)" in err

    assert main(["compare", str(path), "--no-measure", "--rerun-changed"]) == 0
    moved = old.with_name("seed0.replaced-1")
    assert json.loads((moved / "test_metrics.json").read_text())["energy_mae"] == 123.0
    assert yaml.safe_load((moved / "config.yaml").read_text())["optim"]["lr"] == 0.001
    assert yaml.safe_load((old / "config.yaml").read_text())["optim"]["lr"] == 0.005
    assert json.loads((old / "test_metrics.json").read_text())["energy_mae"] != 123.0
    assert "moved to" in capsys.readouterr().out


# ------------------------------------------------------------------ memory and the leaderboard plot


def test_peak_memory_is_the_median_over_seeds_and_measured_one_way(tmp_path, monkeypatch):
    """35, 88 and 40 MB over three seeds report 40 (not the max 88, nor the mean 54.3); a
    measurement made another way (no method, as before) is measured again, a current one is not."""
    import torch

    method = measure_method(torch.get_num_threads())
    runs = []
    for seed, memory in enumerate((35.0, 88.0, 40.0)):
        run = fake_run(tmp_path / "m" / f"seed{seed}", 0.05, None)
        (run / "measured.json").write_text(json.dumps(
            {"inference_per_s": 100.0, "peak_memory_mb": memory, "device": "cpu", "method": method}))
        runs.append(run)
    stale = fake_run(tmp_path / "m" / "seed3", 0.05, None)
    (stale / "measured.json").write_text(json.dumps({"inference_per_s": 1.0, "peak_memory_mb": 999.0, "device": "cpu"}))
    measured = []

    def fake_measure(checkpoint, device, threads=None):
        measured.append(Path(checkpoint).parent.name)
        return {"inference_per_s": 100.0, "peak_memory_mb": 39.0, "device": "cpu", "method": method}

    monkeypatch.setattr(compare_module, "measure_in_subprocess", fake_measure)
    rows = [run_row("m", seed, run, "cpu", measure=True) for seed, run in enumerate(runs)]
    assert measured == [] and summarize(rows)[0]["peak_memory_mb"] == 40.0
    rows.append(run_row("m", 3, stale, "cpu", measure=True))
    assert measured == ["seed3"] and json.loads((stale / "measured.json").read_text())["peak_memory_mb"] == 39.0
    assert summarize(rows)[0]["peak_memory_mb"] == 39.5
    write_leaderboard(rows, tmp_path)
    assert "peak memory (MB, median)" in (tmp_path / "leaderboard.md").read_text()


def test_leaderboard_plot_has_plain_ticks_and_an_unzoomed_time_axis(tmp_path, monkeypatch):
    """Equal time budgets (30.17-30.32 s) and MAEs of 98-407 meV: the time axis starts at 0 and
    the log MAE axis has at least two plain labels ("100", "200"), no "2.6×10²"."""
    from geognn.training import plots

    figures = []

    def keep(plt, figure, title, path):
        figure.canvas.draw()
        figures.append(figure)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    rows = [{"model": label, "seed": seed, "parameters": 1000, "unit": "eV", "energy_mae": mae, "forces_mae": None,
             "train_s": train_s}
            for label, seed, mae, train_s in (("a", 0, 0.098, 30.17), ("a", 1, 0.101, 30.32), ("b", 0, 0.407, 30.25),
                                              ("b", 1, 0.26, 30.2))]
    write_leaderboard(rows, tmp_path)
    axis = figures[0].axes[0]
    low, high = axis.get_xlim()
    assert low == 0 and high >= 30.32
    ymin, ymax = axis.get_ylim()
    assert ymin <= 98 and ymax >= 407
    shown = [(tick, label.get_text()) for ticks, labels in ((axis.get_yticks(), axis.get_yticklabels()),
                                                             (axis.get_yticks(minor=True), axis.get_yticklabels(minor=True)))
             for tick, label in zip(ticks, labels) if ymin <= tick <= ymax and label.get_text()]
    assert len(shown) >= 2
    for tick, text in shown:
        assert float(text.replace("\u2212", "-")) == pytest.approx(tick)  # plain numbers, no ×10ⁿ or $10^n$
    assert all(label.get_text() == "" or float(label.get_text().replace("\u2212", "-")) >= 0
               for label in axis.get_xticklabels())
    assert axis.xaxis.get_offset_text().get_text() == ""
