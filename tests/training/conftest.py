"""Small recipes on the shipped samples: 31 QM9 molecules and 15 QM9-xTB frames."""

from pathlib import Path

import pytest

from geognn.training import TrainConfig, from_dict

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"


def merge(base: dict, changes: dict) -> dict:
    result = dict(base)
    for key, value in changes.items():
        result[key] = merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def _builder(base: dict):
    def build(**changes) -> TrainConfig:
        return from_dict(TrainConfig, merge(base, changes))

    return build


def _common(run_dir) -> dict:
    return {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "optim": {"lr": 0.005, "max_epochs": 3, "scheduler": "none", "ema_decay": 0.9},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 2, "log_every": 1},
        "dtype": "float64",
    }


@pytest.fixture
def qm9_recipe(tmp_path):
    """A recipe builder: ``qm9_recipe(optim={"max_steps": 5})`` -> `TrainConfig` on the QM9 sample."""
    data = {"dataset": "qm9", "options": {"root": str(tmp_path / "qm9"), "source": str(SAMPLES / "qm9_xyz"),
                                          "target": "U0"},
            "split": [20, 6, 5], "batch_size": 4}
    return _builder({**_common(tmp_path / "run"), "data": data})


@pytest.fixture
def xtb_recipe(tmp_path):
    """Energy+force recipes on the 15-frame QM9-xTB sample."""
    data = {"dataset": "ase", "options": {"paths": str(SAMPLES / "qm9_xtb_sample.extxyz")},
            "split": [10, 3, 2], "batch_size": 2}
    loss = {"energy_weight": 1.0, "forces_weight": 10.0, "energy_per_atom": True}
    return _builder({**_common(tmp_path / "run_xtb"), "data": data, "loss": loss})
