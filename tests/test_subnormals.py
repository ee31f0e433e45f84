"""Subnormal floats are flushed where geognn runs (calculator, fit, the command, on request), on
every torch thread, and ``GEOGNN_FLUSH_SUBNORMALS=0`` leaves them alone. Each case runs in a fresh
process: the CPU mode is process state."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Creates torch's thread pool first (as a user's code may), then sets geognn up, then multiplies
# float32 subnormals by 1 on two threads: flushed, the product is 0 in every chunk.
PROBE = """
import sys, torch
torch.set_num_threads(2)
torch.ones(4_000_000).sum()
{setup}
product = torch.full((4_000_000,), 1e-40, dtype=torch.float32) * 1.0
print("FLUSHED" if bool((product == 0).all()) else "KEPT", int((product != 0).sum()))
"""

CALCULATOR = """
from geognn.calculator import GeoGNNCalculator
from geognn.models import build_model
GeoGNNCalculator(build_model("egnn", hidden_channels=8, num_layers=1))
"""

FIT = """
import warnings
from geognn.training import TrainConfig, fit, from_dict
recipe = {"model": {"name": "gin", "options": {"hidden_channels": 8, "num_layers": 1}},
          "data": {"dataset": "qm9", "options": {"root": sys.argv[1], "source": "SAMPLES", "target": "U0"},
                   "split": [20, 6, 5], "batch_size": 10},
          "optim": {"max_steps": 1}, "log": {"run_dir": sys.argv[1] + "/run", "progress": False}}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit(from_dict(TrainConfig, recipe))
""".replace("SAMPLES", str(ROOT / "datasets" / "samples" / "qm9_xyz"))

COMMAND = """
from geognn.cli import main
assert main(["export", "no-such-checkpoint", "-o", "x.pt"]) != 0   # any command: the setup comes first
"""

PUBLIC = """
import geognn
assert geognn.flush_subnormals()
"""


def probe(setup: str, tmp_path, **environment) -> str:
    env = {**os.environ, **environment}
    done = subprocess.run([sys.executable, "-c", PROBE.replace("{setup}", setup), str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cpu_flushes(tmp_path_factory):
    import torch

    if not torch.backends.cpu.get_cpu_capability() or not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals (flush-to-zero needs x86 with SSE3)")
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("setup", [CALCULATOR, FIT, COMMAND, PUBLIC], ids=["calculator", "fit", "command", "public"])
def test_geognn_flushes_subnormals_on_every_thread(setup, tmp_path, cpu_flushes):
    assert probe("", tmp_path).startswith("KEPT 4000000")  # plain torch keeps them: the probe can fail
    assert probe(setup, tmp_path) == "FLUSHED 0"


def test_the_opt_out_keeps_subnormals(tmp_path, cpu_flushes):
    assert probe(CALCULATOR, tmp_path, GEOGNN_FLUSH_SUBNORMALS="0").startswith("KEPT 4000000")
