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
from geognn.training.compare import compare, parse_compare, run_row, summarize, write_leaderboard

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
    assert {f.name for f in files} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
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
    with pytest.raises(ConfigError, match="does not use positions"):
        compare(bad, log=lambda *_: None)  # refused before any model trains
    assert not (tmp_path / "c" / "egnn").exists()


def test_command_line(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "cmp", seeds=[0])
    recipe["models"] = {"egnn": recipe["models"]["egnn"], "gin": recipe["models"]["gin"]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compare", str(path), "--set", "optim.max_epochs=2", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "| 1 |" in out and "leaderboard.png" in out
