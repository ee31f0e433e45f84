"""Checkpoints: atomic writes, weights_only loading, clear errors for foreign files."""

import re

import pytest
import torch
from ase.build import molecule

from geognn.data import atoms_to_data
from geognn.models import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from geognn.models.checkpoint import FORMAT_VERSION


def _checkpoint(model):
    return {"format_version": FORMAT_VERSION, "model_name": "egnn", "model_config": vars(model.config).copy(),
            "state_dict": model.state_dict(), "normalization": {}, "train_config": {}, "metrics": {"step": 3}}


def test_round_trip_predicts_the_same(tmp_path):
    model = build_model("egnn", hidden_channels=8, num_layers=2).double()
    with torch.no_grad():
        model.atomic_reference[6] = -1030.0
    path = save_checkpoint(_checkpoint(model), tmp_path / "model.pt")
    loaded = model_from_checkpoint(path)
    data = atoms_to_data(molecule("CH3CHO"), dtype=torch.float64)
    assert torch.equal(loaded(data)["energy"], model.eval()(data)["energy"])
    assert loaded.atomic_reference.dtype == torch.float64 and not loaded.training
    assert model_from_checkpoint(path, dtype=torch.float32).atomic_reference.dtype == torch.float32
    # A run folder means its best.pt.
    (tmp_path / "best.pt").write_bytes(path.read_bytes())
    assert load_checkpoint(tmp_path)["metrics"]["step"] == 3


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = build_model("egnn", hidden_channels=8, num_layers=1)
    path = save_checkpoint(_checkpoint(model), tmp_path / "last.pt")
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_checkpoint(model), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no partial file left behind


def test_foreign_and_incomplete_files_are_named(tmp_path):
    model = build_model("egnn", hidden_channels=8, num_layers=1)
    torch.save(model, tmp_path / "pickled.pt")  # a pickled module: refused by weights_only
    with pytest.raises(ValueError, match=r"is not a geognn checkpoint \(UnpicklingError: [^\n]*\); geognn checkpoints"):
        load_checkpoint(tmp_path / "pickled.pt")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="no 'format_version'"):
        load_checkpoint(tmp_path / "bare.pt")
    newer = _checkpoint(model) | {"format_version": FORMAT_VERSION + 1}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="newer than this geognn reads"):
        load_checkpoint(tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="needs the keys"):
        save_checkpoint({"format_version": 1}, tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="without best.pt or last.pt"):
        load_checkpoint(tmp_path)
    unknown = _checkpoint(model) | {"model_name": "paiin"}
    with pytest.raises(ValueError, match="model 'paiin' is not one of"):
        model_from_checkpoint(unknown)


def test_a_runs_config_yaml_points_to_the_run_folder(tmp_path):
    """A run folder holds config.yaml beside best.pt; given the yaml, every loader names the folder instead."""
    from geognn.calculator import GeoGNNCalculator

    run_dir = tmp_path / "runs" / "x"
    save_checkpoint(_checkpoint(build_model("egnn", hidden_channels=8, num_layers=1)), run_dir / "best.pt")
    (run_dir / "config.yaml").write_text("model: {name: egnn}\n")
    message = "^" + re.escape(f"{run_dir}/config.yaml is a training recipe, not a checkpoint; pass the run folder "
                              f"{run_dir} (its best.pt) or {run_dir}/best.pt") + "$"
    for load in (load_checkpoint, model_from_checkpoint, GeoGNNCalculator.from_checkpoint):
        with pytest.raises(ValueError, match=message):
            load(run_dir / "config.yaml")
    # A recipe outside a run folder is still told to be trained first.
    (tmp_path / "recipe.yaml").write_text("model: {name: egnn}\n")
    with pytest.raises(ValueError, match="is a recipe, not a checkpoint: train it with `geognn train"):
        load_checkpoint(tmp_path / "recipe.yaml")
