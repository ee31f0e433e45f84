"""Training: recipes (`config`), and, as they land, losses, the trainer and checkpoints."""

from geognn.training.config import ConfigError, TrainConfig, from_dict, load_config

__all__ = ["ConfigError", "TrainConfig", "from_dict", "load_config"]
