"""Training configuration: dataclasses that YAML recipes parse into.

A recipe is a YAML mapping with the sections of `TrainConfig` (``model``,
``data``, ``loss``, ``optim``, ``log``) plus a few top-level fields. Every key
is checked: an unknown key is an error that names its full path (``optim.lrr``)
and the closest valid names, a value of the wrong type names the expected one.
The same dataclasses are built from Python directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from geognn._fields import ConfigError, from_dict


def _choose(value: str, choices: tuple, where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class ModelSection:
    """Which model to build: ``name`` is a key of `geognn.models.MODELS`, ``options`` its config fields."""

    name: str = "egnn"
    options: dict = field(default_factory=dict)


@dataclass
class DataSection:
    """Which dataset, which target, how to split and batch it.

    ``dataset`` names a loader (``qm9``, ``qm9_xtb``, ``ase``, ``md17``) and
    ``options`` its keyword arguments (``root``, ``paths``, ``subset``, ...).
    ``split`` is a named split (``dimenet``) or sizes (counts or fractions,
    one may be null for the rest), drawn with ``split_seed``; ``subset``
    first keeps that many structures at random (``subset_seed``).
    ``split_by: molecule`` keeps all configurations of a molecule in one split
    (the dataset must record groups: QM9-xTB does, ASE files with
    ``options.group_by``); sizes then count structures and each part gets
    whole molecules until it is full. Null splits structure by structure.
    ``train_size`` then trains on the first that many structures of the
    training part only (in the split's seeded order, so smaller sizes are
    subsets of larger ones; whole molecules with ``split_by: molecule``),
    validation and test unchanged: the points of a learning curve.

    ``batch_size`` is per process: with DDP over P processes each optimizer
    step sees P × batch_size structures.

    ``val_paths`` / ``test_paths`` (``dataset: ase`` only) read the validation
    / test structures from their own files, with the same options as
    ``options.paths`` (MACE's ``--valid_file`` / ``--test_file``): with
    ``test_paths`` the training files are split into training and validation
    by a two-part ``split``; with ``val_paths`` too they are all training.
    The test part is evaluated when training ends.

    Normalisation is computed from the training split: ``atom_reference:
    fit`` fits per-element energies by least squares (``none`` skips them;
    ``isolated`` takes them from the isolated-atom frames of the training
    files, ``config_type=IsolatedAtom`` as in MACE; a mapping such as
    ``{Cu: -0.5, Al: -0.3}`` gives them in eV);
    ``intensive`` (None = decided by the target: QM9 homo, lumo and gap are
    intensive) switches to a mean readout with mean/std scaling.
    """

    dataset: str = "qm9"
    options: dict = field(default_factory=dict)
    split: Union[str, list] = field(default_factory=lambda: [0.8, 0.1, None])
    split_seed: int = 42
    split_by: Optional[str] = None
    subset: Optional[int] = None
    subset_seed: int = 0
    train_size: Optional[int] = None
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    intensive: Optional[bool] = None
    atom_reference: Union[str, dict] = "fit"  # fit | none | isolated | {element: eV}
    val_paths: Union[str, list, None] = None
    test_paths: Union[str, list, None] = None

    def __post_init__(self):
        if isinstance(self.atom_reference, dict):
            _check_energies(self.atom_reference)
        else:
            _choose(self.atom_reference, ("fit", "none", "isolated"), "data.atom_reference")
        for name in ("val_paths", "test_paths"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None and (not isinstance(value, list) or not value):
                raise ConfigError(f"data.{name} must be a file or a non-empty list of files, got {value!r}")
            if value is not None and self.dataset != "ase":
                raise ConfigError(f"data.{name} reads files with the ase dataset; data.dataset is {self.dataset!r}")
        if self.split_by is not None:
            _choose(self.split_by, ("molecule",), "data.split_by")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ConfigError(f"data.eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"data.train_size must be a positive number of structures, got {self.train_size}")
        if self.subset is not None and self.subset < 1:
            raise ConfigError(f"data.subset must be a positive number of structures, got {self.subset}")


def _check_energies(mapping: dict) -> None:
    """``data.atom_reference`` as a mapping: element symbols (or atomic numbers) to energies in eV."""
    from ase.data import atomic_numbers

    for element, energy in mapping.items():
        if not (element in atomic_numbers or (isinstance(element, int) and 1 <= element <= 118)):
            raise ConfigError(f"data.atom_reference: {element!r} is not an element symbol or atomic number")
        if isinstance(energy, bool) or not isinstance(energy, (int, float)):
            raise ConfigError(f"data.atom_reference: the energy of {element} must be a number (eV), got {energy!r}")


@dataclass
class LossSection:
    """Weights of the energy, force and stress terms and the error measure.

    ``energy_per_atom`` divides energy errors by the number of atoms (usual for
    extensive energies trained with forces).
    """

    energy_weight: float = 1.0
    forces_weight: float = 0.0
    stress_weight: float = 0.0
    energy_per_atom: bool = False
    kind: str = "mse"  # mse | mae | huber
    huber_delta: float = 0.01

    def __post_init__(self):
        _choose(self.kind, ("mse", "mae", "huber"), "loss.kind")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be non-negative, got {getattr(self, name)}")
        if self.energy_weight == self.forces_weight == self.stress_weight == 0:
            raise ConfigError("loss: every weight is 0; give energy_weight, forces_weight or stress_weight a positive value")


@dataclass
class OptimSection:
    """Optimiser, schedule, clipping, EMA and stopping.

    Training stops at ``max_epochs`` or ``max_steps`` (whichever comes first;
    the cosine schedule spans that many steps), after
    ``early_stopping_patience`` validations without improvement, or after
    ``max_minutes`` of training (a wall-clock budget summed over the run's
    sessions: a resumed run gets what its earlier sessions left, so that runs
    compared under one budget train equally long however often they were
    interrupted; a run stopped by it is not reproducible step for step). ``warmup_steps`` ramps the rate up
    linearly; ``ema_decay`` null trains without weight averaging.
    """

    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_epochs: int = 100
    max_steps: Optional[int] = None
    warmup_steps: int = 0
    scheduler: str = "plateau"  # plateau | cosine | none
    plateau_factor: float = 0.8
    plateau_patience: int = 10
    min_lr: float = 1e-6
    grad_clip: Optional[float] = 10.0
    ema_decay: Optional[float] = 0.99
    early_stopping_patience: Optional[int] = None
    max_minutes: Optional[float] = None

    def __post_init__(self):
        if self.max_epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ConfigError("optim.max_epochs and optim.max_steps must be at least 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"optim.max_minutes must be positive or null, got {self.max_minutes}")
        _choose(self.optimizer, ("adamw", "adam"), "optim.optimizer")
        _choose(self.scheduler, ("plateau", "cosine", "none"), "optim.scheduler")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"optim.ema_decay must lie in (0, 1) or be null, got {self.ema_decay}")


@dataclass
class LogSection:
    """Where results go and how often (all counts in optimizer steps).

    ``checkpoint_every``: write ``last.pt``; ``eval_every``: validate (null =
    at the end of each epoch); ``log_every``: add a training row to ``log.csv``.
    """

    run_dir: str = "runs/run"
    checkpoint_every: int = 1000
    eval_every: Optional[int] = None
    log_every: int = 50
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self):
        for name in ("checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"log.{name} must be at least 1 step, got {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"log.eval_every must be at least 1 step or null (every epoch), got {self.eval_every}")


@dataclass
class TrainConfig:
    """A whole training run.

    ``device``: ``auto`` takes CUDA when available. ``dtype``: of positions
    and weights (targets stay float64 until the loss). On CUDA, ``tf32``
    (null = on for energy-only, off with forces), ``amp`` (bfloat16 autocast,
    energy-only) and ``compile`` (``torch.compile`` of the model,
    energy-only) trade accuracy or start-up time for speed.
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    log: LogSection = field(default_factory=LogSection)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float64
    tf32: Optional[bool] = None
    amp: bool = False
    compile: bool = False

    def __post_init__(self):
        _choose(self.dtype, ("float32", "float64"), "dtype")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        trains_gradients = self.loss.forces_weight > 0 or self.loss.stress_weight > 0
        if self.amp and trains_gradients:
            raise ConfigError(
                "amp: mixed precision is for energy-only training; forces and stress are second "
                "derivatives and lose accuracy in bfloat16 (set amp: false, or forces_weight and stress_weight to 0)"
            )
        if self.compile and trains_gradients:
            raise ConfigError(
                "compile: torch.compile cannot differentiate twice (forces trained with create_graph=True); "
                "set compile: false for energy+force training"
            )

    @property
    def use_tf32(self) -> bool:
        """TF32 matmuls on CUDA: on for energy-only training, off when forces or stress are trained (unless set)."""
        if self.tf32 is not None:
            return self.tf32
        return self.loss.forces_weight == 0 and self.loss.stress_weight == 0

    def to_dict(self) -> dict:
        """Plain nested dict (what a checkpoint stores as ``train_config``)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- parsing


def load_config(path) -> TrainConfig:
    """Parse a YAML recipe into a `TrainConfig`."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training recipe {path} does not exist")
    try:
        mapping = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    try:
        return from_dict(TrainConfig, mapping if mapping is not None else {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
