"""Recipes parse into dataclasses; every bad key or value is named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from geognn.training import ConfigError, TrainConfig, from_dict, load_config

RECIPE = """
model:
  name: egnn
  options: {hidden_channels: 64, num_layers: 3, cutoff: 5.0}
data:
  dataset: qm9
  options: {root: data/qm9, target: U0, subset: 10000}
  split: [8000, 1000, null]
  batch_size: 32
loss:
  energy_weight: 1
  kind: mae
optim:
  lr: 0.0005
  scheduler: cosine
  ema_decay: 0.999
  grad_clip: null
seed: 3
"""


def test_recipe_round_trip(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    config = load_config(path)
    assert config.model.options["hidden_channels"] == 64
    assert config.data.split == [8000, 1000, None]
    assert config.loss.energy_weight == 1.0 and isinstance(config.loss.energy_weight, float)  # int accepted as float
    assert config.optim.grad_clip is None and config.optim.ema_decay == 0.999
    assert config.seed == 3
    # Defaults fill what the recipe leaves out, and the dict form rebuilds the same config.
    assert config.log == TrainConfig().log
    assert from_dict(TrainConfig, config.to_dict()) == config
    assert from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"optim": {"lrr": 0.1}}, r"unknown key 'optim.lrr'; did you mean lr\?"),
        ({"sed": 1}, r"unknown key 'sed'; did you mean seed\?"),
        ({"data": {"batch_size": "32"}}, r"data.batch_size: expected int, got '32'"),
        ({"data": {"batch_size": True}}, r"data.batch_size: expected int"),
        ({"loss": {"energy_per_atom": 1}}, r"loss.energy_per_atom: expected bool"),
        ({"optim": {"grad_clip": "no"}}, r"optim.grad_clip: expected float or null"),
        ({"model": ["egnn"]}, r"model: expected a mapping of ModelSection fields"),
        ({"loss": {"kind": "l3"}}, r"loss.kind must be one of mse, mae, huber; got 'l3'"),
        ({"loss": {"energy_weight": 0}}, r"every weight is 0"),
        ({"loss": {"forces_weight": -1}}, r"loss.forces_weight must be non-negative"),
        ({"optim": {"scheduler": "step"}}, r"optim.scheduler must be one of plateau, cosine, none"),
        ({"optim": {"ema_decay": 1.5}}, r"optim.ema_decay must lie in \(0, 1\)"),
        ({"optim": {"lr": 0}}, r"optim.lr must be positive"),
        ({"dtype": "float16"}, r"dtype must be one of float32, float64"),
    ],
)
def test_bad_recipes_name_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, mapping)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {name: egnn\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("optim:\n  warmup: 100\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml: unknown key 'optim.warmup'; did you mean warmup_steps\?"):
        load_config(wrong)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


def test_every_section_field_has_a_default():
    # A recipe may leave any key out; building with no arguments must work for every section.
    config = TrainConfig()
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value):
            assert type(value)() == value


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_parse_and_build_their_model(path):
    """Every recipe in train/ is a valid TrainConfig (or comparison) whose model options build the model
    (a typo fails here)."""
    from geognn.models import build_model
    from geognn.training.compare import load_compare

    if path.name.startswith("compare_"):
        sections = list(load_compare(path).models.values())
    else:
        sections = [load_config(path).model]
    for section in sections:
        options = {key: (15.0 if value == "auto" else value) for key, value in section.options.items()}
        model = build_model(section.name, **options)
        assert sum(p.numel() for p in model.parameters()) > 0
