"""`geognn compare` on crystals: stress in the leaderboard, per-model optimizer settings, and the
crystal-physics table against the reference potential the data came from."""

import csv
import json

import ase.io
import pytest

from geognn.calculator import GeoGNNCalculator
from geognn.materials import crystal_properties
from geognn.training import ConfigError
from geognn.training.compare import compare, parse_compare
from geognn.training.physics import MaterialsSettings, materials_lines


def crystal_recipe(tmp_path, emt_crystals, **changes):
    train, test = tmp_path / "train.extxyz", tmp_path / "test.extxyz"
    ase.io.write(train, emt_crystals.make_frames(10, seed=0, elements=("Cu",)), format="extxyz")
    ase.io.write(test, emt_crystals.make_frames(3, seed=1, elements=("Cu",)), format="extxyz")
    recipe = {
        "models": {
            "painn": {"hidden_channels": 8, "num_layers": 1, "num_radial": 4, "cutoff": 4.0},
            "schnet-slow": {"name": "schnet", "options": {"hidden_channels": 8, "num_filters": 8, "num_interactions": 1,
                                                          "num_gaussians": 8, "cutoff": 4.0},
                            "optim": {"lr": 0.0005}},
        },
        "seeds": [0],
        "data": {"dataset": "ase", "options": {"paths": [str(train)]}, "test_paths": [str(test)],
                 "split": [8, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "energy_per_atom": True, "forces_weight": 10.0, "stress_weight": 100.0},
        "optim": {"lr": 0.005, "max_steps": 3, "scheduler": "none"},
        "materials": {"reference": "emt", "crystals": ["Cu"], "properties": ["eos", "elastic"]},
        "log": {"run_dir": str(tmp_path / "cmp"), "progress": False},
        "dtype": "float64",
    }
    recipe.update(changes)
    return recipe


def test_crystal_comparison_reports_stress_and_physics_against_the_reference(tmp_path, emt_crystals):
    config = parse_compare(crystal_recipe(tmp_path, emt_crystals))
    assert config.run_config("schnet-slow", 0).optim.lr == 0.0005 and config.run_config("painn", 0).optim.lr == 0.005
    rows, files = compare(config, measure=False, log=lambda *_: None)
    names = {path.name for path in files}
    assert {"report.md", "leaderboard.md", "materials.csv"} <= names
    for row in rows:  # the test file's stress errors reach the leaderboard rows
        stored = json.loads((tmp_path / "cmp" / row["model"] / "seed0" / "test_metrics.json").read_text())
        assert row["stress_mae"] == stored["stress_mae"] > 0
    leaderboard = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "test stress MAE (meV/Å³)" in leaderboard
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Crystal physics" in report and "| **emt** | Cu |" in report
    assert "schnet-slow: optim.lr = 0.0005" in report
    # the values are geognn.materials' own, for EMT and for each best checkpoint in float64
    reference = json.loads((tmp_path / "cmp" / "materials_reference.json").read_text())["values"]["Cu"]
    direct = crystal_properties(__import__("ase.calculators.emt", fromlist=["EMT"]).EMT(), "Cu",
                                include=["eos", "elastic"])
    assert reference["C44_GPa"] == pytest.approx(direct["C44_GPa"], rel=1e-9)
    for label in ("painn", "schnet-slow"):  # 3 training steps: a model may have no E(V) minimum yet, itself a result
        stored = json.loads((tmp_path / "cmp" / label / "seed0" / "materials.json").read_text())["values"]["Cu"]
        calc = GeoGNNCalculator.from_checkpoint(tmp_path / "cmp" / label / "seed0", dtype="float64")
        line = next(line for line in report.splitlines() if line.startswith(f"| {label} | Cu |"))
        if "error" in stored:
            with pytest.raises(ValueError, match="no energy minimum|no minimum"):
                crystal_properties(calc, "Cu", include=["eos", "elastic"])
            assert stored["error"][:40] in line
            continue
        model = crystal_properties(calc, "Cu", include=["eos", "elastic"])
        assert stored["a0_A"] == pytest.approx(model["a0_A"], rel=1e-9)
        error = 100 * (stored["a0_A"] - reference["a0_A"]) / reference["a0_A"]
        assert f"{stored['a0_A']:.4f} ({error:+.1f}%)" in line
    with open(tmp_path / "cmp" / "materials.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["model"] for row in table] == ["emt", "painn", "schnet-slow"]
    # a rerun reads the stored values instead of computing them again
    stamp = (tmp_path / "cmp" / "painn" / "seed0" / "materials.json").stat().st_mtime_ns
    compare(config, measure=False, log=lambda *_: None)
    assert (tmp_path / "cmp" / "painn" / "seed0" / "materials.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("materials, message", [
    ({"crystals": ["Fe"]}, "Fe's crystal is bcc"),
    ({"crystals": ["Cu"], "properties": ["eos", "melting"]}, "unknown \\['melting'\\]"),
    ({"crystals": ["Cu"], "reference": "ase.calculators.nothere:Calc"}, "cannot make the calculator"),
    ({"crystals": ["Cu"], "temperature_K": -1}, "temperature_K must be positive"),
    ({"crystal": ["Cu"]}, "crystal"),
])
def test_bad_materials_sections_are_refused(tmp_path, emt_crystals, materials, message):
    with pytest.raises(ConfigError, match=message):
        parse_compare(crystal_recipe(tmp_path, emt_crystals, materials=materials))


def test_bad_per_model_optim_is_refused(tmp_path, emt_crystals):
    recipe = crystal_recipe(tmp_path, emt_crystals)
    recipe["models"]["painn"] = {"name": "painn", "options": {}, "optim": {"learning_rate": 0.1}}
    with pytest.raises(ConfigError, match="models.painn.optim"):
        parse_compare(recipe)


def test_the_physics_table_shows_values_and_signed_errors():
    settings = MaterialsSettings(crystals=["Cu", "Al"], properties=["eos", "nve"])
    reference = {"Cu": {"a0_A": 3.6, "B_GPa": 140.0, "drift_meV_atom": 0.02},
                 "Al": {"a0_A": 4.0, "B_GPa": 40.0, "drift_meV_atom": 0.03}}
    rows = [{"model": "a", "seed": 0, "materials": {"Cu": {"a0_A": 3.636, "B_GPa": 126.0, "drift_meV_atom": 0.5},
                                                     "Al": {"error": "no energy minimum of fcc Al"}}},
            {"model": "b", "seed": 0, "materials": {"Cu": {"a0_A": 3.6, "B_GPa": 150.0, "drift_meV_atom": 0.1},
                                                     "Al": {"a0_A": 3.9, "B_GPa": 44.0, "drift_meV_atom": 0.1}}},
            {"model": "b", "seed": 1, "materials": {"Cu": {"a0_A": 3.6, "B_GPa": 130.0, "drift_meV_atom": 0.3},
                                                     "Al": {"a0_A": 4.1, "B_GPa": 36.0, "drift_meV_atom": 0.1}}}]
    lines = materials_lines(settings, rows, reference)
    table = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in lines if line.startswith("| ")}
    assert "3.6360 (+1.0%)" in table[("a", "Cu")] and "126.0 (-10.0%)" in table[("a", "Cu")]
    assert "0.500 |" in table[("a", "Cu")] and "%" not in table[("a", "Cu")].split("|")[-2]  # drift: no ratio
    assert "no energy minimum of fcc Al" in table[("a", "Al")]
    assert "140.0 (+0.0%)" in table[("b", "Cu")]  # the mean over seeds
    assert "4.0000 (+0.0%)" in table[("b", "Al")] and "40.0 (+0.0%)" in table[("b", "Al")]
    assert "| **emt** | Al | 4.0000 | 40.0 | 0.030 |" in lines
