"""Training: recipes (`config`), data splits, losses, the loop (`fit`) and its run folders.

```python
from geognn.training import fit, load_config

result = fit(load_config("train/qm9_u0_egnn_tiny.yaml"))
result.test_metrics["energy_mae"]  # eV
```
"""

from geognn.training.config import ConfigError, TrainConfig, from_dict, load_config
from geognn.training.loss import ErrorStats, Loss, format_metrics
from geognn.training.normalization import Normalization, compute_normalization
from geognn.training.trainer import FitResult, Trainer, TrainingDiverged, fit, resume, resume_config

__all__ = [
    "ConfigError",
    "TrainConfig",
    "from_dict",
    "load_config",
    "fit",
    "resume",
    "resume_config",
    "Trainer",
    "FitResult",
    "TrainingDiverged",
    "Loss",
    "ErrorStats",
    "format_metrics",
    "Normalization",
    "compute_normalization",
]
