"""Train EGNN from Python on the 31 QM9 molecules shipped in datasets/samples, then reload it.

The same `TrainConfig` a YAML recipe parses into, built in code; a few seconds on a CPU.
For real runs use the recipes in train/ (`geognn train train/qm9_u0_egnn_tiny.yaml`).
"""

import tempfile
from pathlib import Path

from geognn.models import model_from_checkpoint
from geognn.training import TrainConfig, fit, format_metrics, from_dict

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "samples"

with tempfile.TemporaryDirectory() as folder:
    config = from_dict(TrainConfig, {
        "model": {"name": "egnn", "options": {"hidden_channels": 32, "num_layers": 3, "update_coords": False}},
        "data": {"dataset": "qm9", "options": {"root": f"{folder}/qm9", "source": str(SAMPLES / "qm9_xyz"),
                                               "target": "U0"},
                 "split": [21, 5, 5], "batch_size": 7},
        "optim": {"lr": 0.003, "max_epochs": 10, "scheduler": "cosine"},
        "log": {"run_dir": f"{folder}/run", "progress": False},
    })
    result = fit(config)
    print(f"stopped: {result.stopped} after {result.step} steps")
    print(f"test: {format_metrics(result.test_metrics)}")
    model = model_from_checkpoint(result.best_checkpoint)  # EMA weights, normalisation included
    print(f"reloaded {type(model).__name__} with {sum(p.numel() for p in model.parameters())} parameters; "
          f"energy per-element references for C: {float(model.atomic_reference[6]):.2f} eV")
