"""The README's Python snippets run verbatim, in order, in one folder, as a new user would paste them.

A snippet preceded by ``<!-- readme-test: needs PATH ... -->`` uses run folders that the
README makes with long commands just above it (data generation and training); the test
stands in for those with short trainings on the shipped QM9-xTB sample, then runs the
snippet unchanged.
"""

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: needs (?P<needs>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def snippets():
    text = (ROOT / "README.md").read_text()
    return [(text[: match.start()].count("\n") + 1, (match.group("needs") or "").split(), match.group("code"))
            for match in BLOCK.finditer(text)]


def _force_run(run_dir: Path, seed: int) -> None:
    """A few steps of EGNN on energies and forces of the shipped QM9-xTB sample: a stand-in
    for `geognn train train/qm9_xtb_egnn.yaml`."""
    from geognn.training import TrainConfig, fit, from_dict

    recipe = {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "data": {"dataset": "ase", "options": {"paths": str(ROOT / "datasets/samples/qm9_xtb_sample.extxyz")},
                 "split": [10, 3, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none", "ema_decay": None},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 100},
        "dtype": "float64", "seed": seed,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(from_dict(TrainConfig, recipe))


def test_readme_has_snippets():
    found = snippets()
    assert len(found) >= 8 and all(code.strip() for _, _, code in found)


def test_readme_python_snippets_run_verbatim_in_order(tmp_path, monkeypatch):
    for name in ("train", "datasets", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    for line, needs, code in snippets():
        for seed, path in enumerate(needs):
            if not Path(path).exists():
                _force_run(Path(path), seed)
        try:
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
        except Exception as err:  # name the snippet, then let pytest show the traceback
            pytest.fail(f"the README snippet at line {line} fails: {type(err).__name__}: {err}")
