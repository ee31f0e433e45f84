"""The examples a user copies keep working (run in-process; only train_from_python trains, for seconds).

Each runs in a temporary folder, so files it writes (trajectories) land there.
"""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
ARGUMENTS = {"md_with_ase.py": ["--steps", "200"]}  # shorter than the default run


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(path), *ARGUMENTS.get(path.name, [])])
    runpy.run_path(str(path), run_name="__main__")
    assert "energy" in capsys.readouterr().out
