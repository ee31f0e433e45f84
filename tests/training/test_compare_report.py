"""`geognn compare` beyond one point per model: learning curves, equal-budget search, paired
statistics, energy+force comparisons."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from geognn.training import ConfigError, fit
from geognn.training.compare import compare, parse_compare
from geognn.training.config import DataSection
from geognn.training.data import load_splits
from geognn.training.stats import paired_bootstrap, power_law_fit

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"
XTB = str(SAMPLES / "qm9_xtb_sample.extxyz")


def sample_recipe(run_dir, **changes):
    recipe = {
        "models": {"egnn": {"hidden_channels": 8, "num_layers": 1, "num_radial": 4},
                   "gin": {"hidden_channels": 8, "num_layers": 2}},
        "seeds": [0],
        "data": {"dataset": "qm9", "options": {"root": str(run_dir.parent / "qm9"), "source": str(SAMPLES / "qm9_xyz"),
                                                "target": "U0"},
                 "split": [16, 5, 6], "split_seed": 0, "batch_size": 4},  # seed 0: 4 molecules hold every element
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none"},
        "log": {"run_dir": str(run_dir), "progress": False},
        "dtype": "float64",
    }
    recipe.update(changes)
    return recipe


def quiet(*_):
    pass


# ------------------------------------------------------------------------------- learning curves


def test_train_size_keeps_nested_subsets_and_the_same_validation_and_test():
    options = {"paths": XTB, "cache": False}
    parts = {n: load_splits(DataSection(dataset="ase", options=options, split=[10, 3, 2], train_size=n),
                            torch.float64)[1] for n in (3, 6, None)}
    energies = {n: [float(d.energy) for d in part[0]] for n, part in parts.items()}
    assert [len(energies[n]) for n in (3, 6, None)] == [3, 6, 10]
    assert energies[3] == energies[6][:3] and energies[6] == energies[None][:6]  # nested, in the split's order
    for n in (3, 6):
        for k in (1, 2):
            assert [float(d.energy) for d in parts[n][k]] == [float(d.energy) for d in parts[None][k]]
    with pytest.raises(ConfigError, match="train_size=11 but the training split holds only 10"):
        load_splits(DataSection(dataset="ase", options=options, split=[10, 3, 2], train_size=11), torch.float64)
    with pytest.raises(ConfigError, match="train_size"):
        DataSection(train_size=0)


def test_train_size_by_molecule_takes_whole_molecules():
    options = {"paths": XTB, "cache": False, "group_by": "qm9_index"}
    section = dict(dataset="ase", options=options, split=[10, 5, None], split_by="molecule")
    full = load_splits(DataSection(**section), torch.float64)[1][0]
    for size, expected in ((1, 5), (5, 5), (6, 10)):
        train = load_splits(DataSection(**section, train_size=size), torch.float64)[1][0]
        groups = [int(d.group) for d in train]
        assert len(train) == expected and all(groups.count(g) == 5 for g in set(groups))
        assert set(groups) <= {int(d.group) for d in full}


def test_learning_curve_trains_every_size_and_fits_the_slope(tmp_path):
    """Sizes 4, 8, 16 for two models: the runs sit in nN/seedS with that training set and the
    same validation/test; the table's slope is the log-log fit of the runs' test MAEs; a rerun
    trains nothing; size_budget: steps trains the same number of steps at every size."""
    config = parse_compare(sample_recipe(tmp_path / "cmp", train_sizes=[16, 4, 8]))
    rows, files = compare(config, measure=False, log=quiet)
    assert [(r["model"], r["train_size"]) for r in rows] == [(m, n) for m in ("egnn", "gin") for n in (4, 8, 16)]
    for row in rows:
        run = Path(row["run_dir"])
        assert run == tmp_path / "cmp" / row["model"] / f"n{row['train_size']}" / "seed0"
        assert yaml.safe_load((run / "config.yaml").read_text())["data"]["train_size"] == row["train_size"]
        assert json.loads((run / "test_metrics.json").read_text())["structures"] == 6
        assert row["steps"] == 2 * row["train_size"] // 4  # size_budget: epochs, 2 epochs of batch 4
    assert {f.name for f in files} >= {"report.md", "learning_curve.png", "leaderboard.md"}
    report = (tmp_path / "cmp" / "report.md").read_text()
    for label in ("egnn", "gin"):
        runs = [r for r in rows if r["model"] == label]
        fitted = power_law_fit(np.array([r["train_size"] for r in runs], float), np.array([r["energy_mae"] for r in runs]))
        line = next(line for line in report.splitlines() if line.startswith(f"| {label} |") and "±" not in line
                    and "[" not in line and line.count("|") == 7)
        assert line.split("|")[-3].strip() == f"{fitted['slope']:.2f}"
    leaderboard = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert len(leaderboard.splitlines()) == 4  # the largest size only
    said = []
    compare(config, measure=False, log=said.append)
    assert len(said) == 6 and all("finished already" in line for line in said)

    steps = parse_compare({**sample_recipe(tmp_path / "steps", train_sizes=[4, 16], size_budget="steps",
                                        optim={"lr": 0.005, "max_steps": 3, "scheduler": "none"}),
                           "models": {"gin": {"hidden_channels": 8, "num_layers": 2}}})
    rows, _ = compare(steps, measure=False, log=quiet)
    assert [r["steps"] for r in rows] == [3, 3]


def test_sizes_that_lack_an_element_of_the_test_set_are_refused(tmp_path):
    """With split seed 42 the sample's only fluorine molecule lands in validation: no training size
    can learn F, and the comparison says so before training anything."""
    recipe = sample_recipe(tmp_path / "cmp", train_sizes=[4, 16])
    recipe["data"]["split_seed"] = 42
    with pytest.raises(ConfigError, match=r"size\(s\) 4 lack F; 16 lack F.*even the whole training split lacks one"):
        compare(parse_compare(recipe), measure=False, log=quiet)
    assert not (tmp_path / "cmp").exists()


def test_smallest_train_size_is_the_first_that_holds_every_element():
    from geognn.training.data import _first_structures, elements, smallest_train_size

    section = DataSection(dataset="ase", options={"paths": XTB, "cache": False}, split=[10, 3, 2], split_seed=3)
    _, parts, _ = load_splits(section, torch.float64)
    wanted = elements(parts[0])
    smallest = smallest_train_size(section, parts, wanted)
    first = lambda n: elements(_first_structures(parts[0], DataSection(**{**section.__dict__, "train_size": n})))
    assert first(smallest) == wanted and smallest > 1 and first(smallest - 1) != wanted
    assert smallest_train_size(section, parts, wanted | {92}) is None


def test_training_warns_when_validation_holds_an_element_training_lacks(tmp_path, qm9_recipe):
    from geognn.training.data import elements

    config = qm9_recipe(optim={"max_steps": 1})
    _, parts, _ = load_splits(config.data, torch.float64)
    assert 9 in elements(parts[1]) and 9 not in elements(parts[0])  # the sample's fluorine molecule
    with pytest.warns(UserWarning, match=r"the val split holds element\(s\) F that no training structure has"):
        fit(config)


def test_learning_curve_recipes_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="train_sizes"):
        parse_compare(sample_recipe(tmp_path / "c", train_sizes=[4, 4]))
    with pytest.raises(ConfigError, match="train_sizes"):
        parse_compare(sample_recipe(tmp_path / "c", train_sizes=[0, 4]))
    with pytest.raises(ConfigError, match="remove optim.max_steps"):
        parse_compare(sample_recipe(tmp_path / "c", train_sizes=[4], optim={"max_steps": 3}))
    with pytest.raises(ConfigError, match="set optim.max_steps"):
        parse_compare(sample_recipe(tmp_path / "c", train_sizes=[4], size_budget="steps"))
    with pytest.raises(ConfigError, match="size_budget"):
        parse_compare(sample_recipe(tmp_path / "c", size_budget="minutes"))
    with pytest.raises(ConfigError, match="rank_by: forces_mae needs force training"):
        parse_compare(sample_recipe(tmp_path / "c", rank_by="forces_mae"))


# --------------------------------------------------------------------------------- paired statistics


def fake_model_runs(root, label, errors, seeds=(0,)):
    """Finished runs whose predictions_test.pt give exactly ``errors`` [seeds, M] (eV) on one test set."""
    reference = torch.linspace(-10.0, -5.0, errors.shape[1], dtype=torch.float64)
    for seed, per_structure in zip(seeds, errors):
        run = root / label / f"seed{seed}"
        run.mkdir(parents=True)
        torch.save({"energy": reference + torch.as_tensor(per_structure), "energy_ref": reference,
                    "num_atoms": torch.full((errors.shape[1],), 3), "baseline": torch.zeros(errors.shape[1])},
                   run / "predictions_test.pt")
        (run / "test_metrics.json").write_text(json.dumps({"unit": "eV", "energy_mae": float(np.abs(per_structure).mean()),
                                                           "step": 1}))
        (run / "run.json").write_text(json.dumps({"parameters": 10}))
        (run / "log.csv").write_text("step,split,wall_s\n1,val,1.0\n")


def test_paired_statistics_rank_and_report(tmp_path):
    """Three models on the same 200 structures: 'close' differs from 'best' by noise around zero,
    'worse' is 20 meV worse on every structure. Ranks 1, 1, 3; the report's intervals are those
    of the paired bootstrap on the stored errors; each run gets test_errors.csv."""
    from geognn.training.compare import run_row
    from geognn.training.report import write_leaderboard, paired_differences

    rng = np.random.default_rng(1)
    best = np.abs(rng.normal(0.05, 0.02, (2, 200)))
    models = {"best": best, "close": np.abs(best + rng.normal(0.0, 0.001, best.shape)), "worse": best + 0.02}
    for label, errors in models.items():
        fake_model_runs(tmp_path, label, errors, seeds=(0, 1))
    rows = [run_row(label, seed, tmp_path / label / f"seed{seed}", "cpu", measure=False)
            for label in models for seed in (0, 1)]
    with open(tmp_path / "worse" / "seed1" / "test_errors.csv") as handle:
        stored = [float(line["energy_abs_error"]) for line in csv.DictReader(handle)]
    assert np.allclose(stored, models["worse"][1], rtol=1e-9)
    pairs, note = paired_differences(rows, "energy_mae", samples=2000)
    assert note == ""
    by_pair = {(p["better"], p["worse"]): p for p in pairs}
    direct = paired_bootstrap(models["worse"], models["best"], samples=2000, level=0.95, seed=0)
    assert by_pair[("best", "worse")]["low"] == pytest.approx(direct["low"], rel=1e-9) and by_pair[("best", "worse")]["significant"]
    assert by_pair[("best", "worse")]["difference"] == pytest.approx(0.02, rel=1e-9)
    assert not by_pair[tuple(sorted(("best", "close"), key=lambda m: models[m].mean()))]["significant"]
    write_leaderboard(rows, tmp_path, "energy_mae", samples=2000)
    ranks = {line.split("|")[2].strip(): line.split("|")[1].strip()
             for line in (tmp_path / "leaderboard.md").read_text().splitlines()[2:]}
    assert ranks == {"best": "1", "close": "1", "worse": "3"}

    fake_model_runs(tmp_path / "other", "elsewhere", best[:, :150])  # another test set: no pairing
    rows.append(run_row("elsewhere", 0, tmp_path / "other" / "elsewhere" / "seed0", "cpu", measure=False))
    assert paired_differences(rows, "energy_mae")[1].endswith("tested on different structures (another split or dataset)")


def test_stored_errors_of_a_real_run_give_its_test_mae(tmp_path):
    config = parse_compare({**sample_recipe(tmp_path / "cmp"), "models": {"gin": {"hidden_channels": 8}}})
    rows, _ = compare(config, measure=False, log=quiet)
    with open(tmp_path / "cmp" / "gin" / "seed0" / "test_errors.csv") as handle:
        errors = [float(line["energy_abs_error"]) for line in csv.DictReader(handle)]
    assert len(errors) == 6 and np.mean(errors) == pytest.approx(rows[0]["energy_mae"], rel=1e-9)
    assert "no paired statistics" not in (tmp_path / "cmp" / "report.md").read_text()


# ----------------------------------------------------------------------------- energy + forces


def xtb_recipe(run_dir, **changes):
    recipe = {
        "models": {"egnn": {"hidden_channels": 8, "num_layers": 1, "num_radial": 4},
                   "schnet": {"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_gaussians": 8},
                   "gin": {"hidden_channels": 8, "num_layers": 2}},
        "seeds": [0, 1],
        "data": {"dataset": "ase", "options": {"paths": XTB, "cache": False}, "split": [9, 3, 3], "batch_size": 3},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none"},
        "log": {"run_dir": str(run_dir), "progress": False},
        "dtype": "float64",
    }
    recipe.update(changes)
    return recipe


def test_force_comparison_ranks_by_force_mae_and_leaves_out_2d_models(tmp_path):
    said = []
    rows, files = compare(parse_compare(xtb_recipe(tmp_path / "cmp")), measure=False, log=said.append)
    assert {r["model"] for r in rows} == {"egnn", "schnet"} and all(r["forces_mae"] > 0 for r in rows)
    assert any(line.startswith("gin: left out") for line in said)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Left out" in report and "- gin: loss.forces_weight" in report
    assert "Ranked by test force MAE" in report and "Paired differences in test force MAE (meV/Å)" in report
    table = (tmp_path / "cmp" / "leaderboard.md").read_text().splitlines()
    assert "test force MAE (meV/Å)" in table[0]
    forces = {label: np.mean([r["forces_mae"] for r in rows if r["model"] == label]) for label in ("egnn", "schnet")}
    energies = {label: np.mean([r["energy_mae"] for r in rows if r["model"] == label]) for label in ("egnn", "schnet")}
    assert [line.split("|")[2].strip() for line in table[2:]] == sorted(forces, key=forces.get)
    # The paired force statistic is the ratio of sums over the structures, averaged over seeds: the
    # observed difference equals the difference of the runs' force MAEs.
    pair = next(line for line in report.splitlines() if line.startswith("| egnn |") or line.startswith("| schnet |")
                if line.count("|") == 7 and "[" in line)
    better, worse = pair.split("|")[1].strip(), pair.split("|")[2].strip()
    assert float(pair.split("|")[3]) == pytest.approx(1000 * (forces[worse] - forces[better]), abs=0.006)
    rows, _ = compare(parse_compare(xtb_recipe(tmp_path / "cmp", rank_by="energy_mae")), measure=False, log=quiet)
    table = (tmp_path / "cmp" / "leaderboard.md").read_text().splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == sorted(energies, key=energies.get)


# ----------------------------------------------------------------------------------------- search


def search_recipe(run_dir, trials=3, **changes):
    recipe = sample_recipe(run_dir, **changes)
    recipe["search"] = {"trials": trials, "optim": {"max_epochs": 1}, "seed": 0, "startup_trials": 2}
    recipe["models"]["egnn"]["search"] = {"optim.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
                                          "hidden_channels": [4, 8]}
    recipe["models"]["gin"]["search"] = {"optim.lr": {"low": "1e-3", "high": "1e-2", "log": True},
                                         "num_layers": {"low": 1, "high": 3}}
    return recipe


def test_search_gives_every_model_the_same_trials_and_trains_the_best(tmp_path):
    import optuna

    said = []
    config = parse_compare(search_recipe(tmp_path / "cmp"))
    rows, files = compare(config, measure=False, log=said.append)
    storage = f"sqlite:///{tmp_path / 'cmp' / 'search.db'}"
    assert set(optuna.get_all_study_names(storage)) == {"egnn", "gin"}
    for label in ("egnn", "gin"):
        study = optuna.load_study(study_name=label, storage=storage)
        assert len(study.trials) == 3
        for trial in study.trials:  # each trial a run folder that saw validation data only
            run = Path(trial.user_attrs["run_dir"])
            assert (run / "best.pt").exists() and not (run / "test_metrics.json").exists()
            stored = yaml.safe_load((run / "config.yaml").read_text())
            assert stored["optim"]["max_epochs"] == 1 and stored["optim"]["lr"] == pytest.approx(trial.params["optim.lr"])
        finished = [t for t in study.trials if t.state.name == "COMPLETE"]
        best = min(finished, key=lambda t: t.value)
        trained = yaml.safe_load((tmp_path / "cmp" / label / "seed0" / "config.yaml").read_text())
        assert trained["optim"]["lr"] == pytest.approx(best.params["optim.lr"]) and trained["optim"]["max_epochs"] == 2
        option = "hidden_channels" if label == "egnn" else "num_layers"
        assert trained["model"]["options"][option] == best.params[option]
        assert json.loads((tmp_path / "cmp" / "search" / label / "best.json").read_text())["trial"] == best.number
    assert {f.name for f in files} >= {"search_history.png", "report.md"}
    assert "## Hyperparameter search" in (tmp_path / "cmp" / "report.md").read_text()

    said.clear()  # a rerun searches and trains nothing; a larger budget runs only the missing trials
    compare(config, measure=False, log=said.append)
    assert not any("search trial" in line for line in said)
    compare(parse_compare(search_recipe(tmp_path / "cmp", trials=4)), measure=False, log=said.append,
            rerun_changed=True)
    assert sum("search trial 4/4" in line for line in said) == 2 and not any("search trial 3/" in line for line in said)

    changed = search_recipe(tmp_path / "cmp", trials=4)
    changed["models"]["egnn"]["search"]["hidden_channels"] = [4, 16]
    with pytest.raises(FileExistsError, match="search of egnn .*space.hidden_channels"):
        compare(parse_compare(changed), measure=False, log=quiet)


def test_an_interrupted_search_trial_resumes_in_its_folder(tmp_path, monkeypatch):
    import geognn.training.trainer as trainer_module

    real_fit, calls = trainer_module.fit, []

    def interrupt_first(config, resume=False, callbacks=(), test=True):
        calls.append((config.log.run_dir, resume, config.optim.lr))

        def stop(trainer):
            if len(calls) == 1 and trainer.step == 2:
                trainer.stop_requested = True
        return real_fit(config, resume=resume, callbacks=[*callbacks, stop], test=test)

    monkeypatch.setattr(trainer_module, "fit", interrupt_first)
    recipe = search_recipe(tmp_path / "cmp", trials=2)
    recipe["models"] = {"gin": recipe["models"]["gin"]}
    recipe["search"]["optim"] = {"max_epochs": 2}
    with pytest.raises(KeyboardInterrupt, match="resume the search"):
        compare(parse_compare(recipe), measure=False, log=quiet)
    compare(parse_compare(recipe), measure=False, log=quiet)
    assert calls[1] == (calls[0][0], True, calls[0][2])  # the same folder and values, resumed from last.pt
    assert len(calls) == 4  # the resumed trial, the second trial, the best trained on seed 0


def test_pruning_stops_a_trial_worse_than_the_median(tmp_path, qm9_recipe):
    """A trial whose validation loss is above every earlier trial's at the same step is stopped
    at its first validation, as 'pruned', without touching the test split."""
    import optuna

    from geognn.training.search import _Pruning

    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values={step: 0.0 for step in range(50)}))
    config = qm9_recipe(optim={"max_epochs": 3}, log={"eval_every": 2})
    result = fit(config, callbacks=[_Pruning(study.ask(), enabled=True)], test=False)
    assert result.stopped == "pruned" and result.step == 2 and result.test_metrics == {}
    assert not (Path(config.log.run_dir) / "test_metrics.json").exists()
    config = qm9_recipe(optim={"max_epochs": 3}, log={"eval_every": 2, "run_dir": str(tmp_path / "kept")})
    assert fit(config, callbacks=[_Pruning(study.ask(), enabled=False)], test=False).stopped == "finished"


def test_bad_search_sections_say_what_is_wrong(tmp_path):
    def with_space(space, search=True):
        recipe = search_recipe(tmp_path / "c")
        recipe["models"]["egnn"]["search"] = space
        if not search:
            del recipe["search"]
        return recipe

    cases = [
        (with_space({"hidden_chanels": [4]}), "egnn has no option 'hidden_chanels'"),
        (with_space({"loss.forces_weight": [1.0]}), "only model options and optim"),
        (with_space({"optim.lr": {"low": 0.1, "high": 0.01}}), "low \\(0.1\\) must be below high"),
        (with_space({"optim.lr": {"low": 0.0, "high": 0.01, "log": True}}), "log range needs a positive low"),
        (with_space({"optim.lr": {"low": 0.001}}), "give a list of choices or a range"),
        (with_space({"hidden_channels": ["wide"]}), "models.egnn.search.hidden_channels: .wide. is not a valid value"),
        (with_space({"optim.lr": [0.01]}, search=False), "needs the top-level 'search:'"),
    ]
    for recipe, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_compare(recipe)
    with pytest.raises(ConfigError, match="search.trials"):
        parse_compare({**search_recipe(tmp_path / "c"), "search": {"trials": 0}})
    with pytest.raises(ConfigError, match="search.optim.max_epoch"):
        parse_compare({**search_recipe(tmp_path / "c"), "search": {"optim": {"max_epoch": 1}}})
