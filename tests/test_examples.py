"""The examples a user copies keep working (run in-process; only train_from_python trains, for seconds).

Each runs in a temporary folder, so files it writes (trajectories) land there.
"""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
ARGUMENTS = {"md_with_ase.py": ["--steps", "200"],  # shorter than the default runs
             "pimd_with_ipi.py": ["--steps", "20"],
             "lammps_nve.py": ["--steps", "50"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(path), *ARGUMENTS.get(path.name, [])])
    runpy.run_path(str(path), run_name="__main__")
    assert "energy" in capsys.readouterr().out


def test_md_example_starts_at_the_asked_temperature(capsys, monkeypatch, tmp_path):
    """The MD example's first logged temperature, over 3N - 6 degrees of freedom, is the one asked for."""
    path = Path(__file__).parents[1] / "examples" / "md_with_ase.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(path), "--steps", "10", "--temperature", "250"])
    runpy.run_path(str(path), run_name="__main__")
    step0 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step      0"))
    assert step0.split()[-2:] == ["250.0", "K"]
