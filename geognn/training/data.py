"""From a recipe's ``data`` section to datasets, splits and batches.

`DATASETS` maps the names a recipe may use to loaders; `load_splits` builds
the dataset, takes the subset and the seeded split; `EpochBatches` gives each
process its share of every global batch in an order fixed by (seed, epoch),
so that a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import Sampler

from geognn.data import MD17, QM9, ASEDataset, QM9xTB, keys
from geognn.data.collated import group_split_indices, random_split_indices
from geognn.data.labels import label_counts
from geognn.data.units import display_unit
from geognn.training.config import ConfigError, DataSection, LossSection



def _qm9_xtb(**options):
    options.setdefault("generate", False)  # a missing file is an error, not a silent hour of xTB
    return QM9xTB(**options)


DATASETS: dict[str, Callable] = {"qm9": QM9, "qm9_xtb": _qm9_xtb, "ase": ASEDataset, "md17": MD17}
_SIGNATURES = {"qm9_xtb": QM9xTB}


@dataclass(frozen=True)
class Target:
    """What the ``energy`` label measures: its name, unit and whether it is intensive (and a
    potential energy, which is what an ASE calculator may use)."""

    name: str
    unit: str
    intensive: bool
    potential_energy: bool = True

    @property
    def display(self) -> tuple[float, str]:
        """(factor, unit) in which errors are reported: eV as meV, anything else as is."""
        return display_unit(self.unit)


def build_dataset(section: DataSection, dtype: torch.dtype):
    """The dataset a recipe names, with its options; bad names and options raise `ConfigError`."""
    if section.dataset not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}; got {section.dataset!r}")
    loader = DATASETS[section.dataset]
    options = dict(section.options)
    parameters = inspect.signature(_SIGNATURES.get(section.dataset, loader)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(options) - set(parameters) - {"dtype"}) if not takes_any else []
    if unknown:
        valid = [name for name in parameters if name not in ("self", "dtype", "transform", "overrides")]
        raise ConfigError(f"data.options: unknown option(s) {unknown} for dataset {section.dataset!r}; valid: {valid}")
    if "dtype" in options:
        raise ConfigError("data.options.dtype: set the top-level 'dtype' instead")
    if "progress" in parameters:
        options.setdefault("progress", False)
    return loader(**options, dtype=dtype)


def target_of(dataset, section: DataSection) -> Target:
    """The target the ``energy`` label holds, as the dataset declares it (`target_info`);
    ``data.intensive`` may override whether it is intensive."""
    try:
        info = dataset.target_info
    except ValueError as err:  # QM9 without a target
        raise ConfigError(f"data.options.target: {err}") from None
    intensive = info.intensive if section.intensive is None else section.intensive
    return Target(info.name, info.unit, intensive, info.potential_energy)


def load_splits(section: DataSection, dtype: torch.dtype):
    """(dataset, [train, val, test], target); test may be empty when the split has two parts."""
    dataset = build_dataset(section, dtype)
    if len(dataset) == 0:
        raise ValueError(f"data: the {section.dataset} dataset holds no structures")
    if keys.ENERGY not in dataset[0]:
        raise ValueError(f"data: the {section.dataset} dataset has no 'energy' labels to train on")
    if section.subset is not None:
        if section.subset > len(dataset):
            raise ConfigError(f"data.subset={section.subset} but the dataset has only {len(dataset)} structures")
        generator = torch.Generator().manual_seed(section.subset_seed)
        dataset = dataset.index_select(torch.randperm(len(dataset), generator=generator)[: section.subset].sort().values)
    if section.val_paths is not None:  # every structure of the training files trains
        parts = [dataset, _separate(section, "val_paths", dtype)]
        parts.append(_separate(section, "test_paths", dtype) if section.test_paths is not None else _empty(dataset))
    else:
        parts = _split(dataset, section)
        if section.test_paths is not None:
            if len(parts[2]):
                raise ConfigError(f"data.split {section.split} makes a test part, but data.test_paths gives the test "
                                  "structures; split the training files in two, e.g. split: [0.9, 0.1]")
            parts[2] = _separate(section, "test_paths", dtype)
    if section.train_size is not None:
        parts[0] = _first_structures(parts[0], section)
    return dataset, parts, target_of(dataset, section)


def _empty(dataset):
    return dataset.index_select(torch.zeros(0, dtype=torch.long))


def _separate(section: DataSection, name: str, dtype: torch.dtype):
    """The structures of ``data.val_paths`` or ``data.test_paths``, read with the training files' options."""
    paths = getattr(section, name)
    dataset = build_dataset(replace(section, options={**section.options, "paths": paths}), dtype)
    if len(dataset) == 0:
        raise ConfigError(f"data.{name}: {', '.join(map(str, paths))} hold no structures")
    return dataset


def _split(dataset, section: DataSection) -> list:
    """[train, val, test] of the seeded split (test empty for a two-part split)."""
    split = section.split if isinstance(section.split, str) else list(section.split)
    if section.split_by == "molecule" and keys.GROUP not in dataset[0]:
        raise ConfigError(
            f"data.split_by=molecule: the {section.dataset} dataset does not record molecules; QM9-xTB does, "
            "and ASE files do with data.options.group_by (an info key such as qm9_index, or 'file')"
        )
    try:
        if section.split_by == "molecule":
            indices = group_split_indices(dataset.structure_values(keys.GROUP), split, section.split_seed)
        else:
            indices = random_split_indices(len(dataset), split, section.split_seed)
        parts = [dataset.index_select(index) for index in indices]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"data.split: {err}") from None
    if len(parts) not in (2, 3) or len(parts[0]) == 0 or len(parts[1]) == 0:
        raise ConfigError(f"data.split must give non-empty train and validation parts (and optionally test); got {split}")
    if len(parts) == 2:
        parts.append(_empty(dataset))
    return parts


def _first_structures(train, section: DataSection):
    """The first ``section.train_size`` structures of the training part, which lists them in a
    seeded random order. Split by molecule (the part then lists them by index): whole molecules
    in a seeded random order until at least that many structures are in."""
    size = section.train_size
    if size > len(train):
        raise ConfigError(f"data.train_size={size} but the training split holds only {len(train)} structures")
    if section.split_by != "molecule":
        return train.index_select(torch.arange(size))
    groups = train.structure_values(keys.GROUP).reshape(-1)
    unique, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    order = torch.randperm(unique.numel(), generator=torch.Generator().manual_seed(section.split_seed))
    taken = int(torch.searchsorted(torch.cumsum(counts[order], 0), size)) + 1  # molecules until >= size
    keep = torch.zeros(unique.numel(), dtype=torch.bool)
    keep[order[:taken]] = True
    return train.index_select(torch.nonzero(keep[inverse]).reshape(-1))


def elements(part) -> set:
    """The atomic numbers that occur in a dataset or a view of one (a split part)."""
    data, slices = getattr(part, "_data", None), getattr(part, "slices", None)
    if data is None or slices is None or keys.ATOMIC_NUMBERS not in slices:
        return {int(z) for item in part for z in item[keys.ATOMIC_NUMBERS].reshape(-1).tolist()}
    bounds = slices[keys.ATOMIC_NUMBERS]
    structure = torch.repeat_interleave(torch.arange(len(bounds) - 1), torch.diff(bounds))
    chosen = torch.zeros(len(bounds) - 1, dtype=torch.bool)
    chosen[torch.as_tensor(list(part.indices()), dtype=torch.long)] = True
    return set(data[keys.ATOMIC_NUMBERS].reshape(-1)[chosen[structure]].unique().tolist())


def unseen_elements(parts) -> dict:
    """Split name (``val``, ``test``) -> the elements it holds that the training part lacks, sorted:
    a model cannot learn their energies (their per-element references stay undetermined)."""
    seen = elements(parts[0])
    unseen = {name: sorted(elements(part) - seen) for name, part in zip(("val", "test"), parts[1:]) if len(part)}
    return {name: found for name, found in unseen.items() if found}


def smallest_train_size(section: DataSection, parts, wanted: set) -> Optional[int]:
    """The smallest ``data.train_size`` whose training structures hold every element of ``wanted``
    (None when the whole training part does not)."""
    if not wanted <= elements(parts[0]):
        return None
    low, high = 1, len(parts[0])
    while low < high:  # the subsets are nested, so holding every element is monotonic in the size
        middle = (low + high) // 2
        if wanted <= elements(_first_structures(parts[0], replace(section, train_size=middle))):
            high = middle
        else:
            low = middle + 1
    return low


def describe(section: DataSection) -> str:
    """The dataset a data section names, for messages: its name, and its files for ASE files."""
    paths = section.options.get("paths") if section.dataset == "ase" else None
    if paths is None:
        return f"the {section.dataset} dataset"
    return f"the ase dataset {paths if isinstance(paths, str) else ', '.join(map(str, paths))}"


_WEIGHTS = {keys.ENERGY: "energy_weight", keys.FORCES: "forces_weight", keys.STRESS: "stress_weight"}
_SOURCES = {keys.ENERGY: "a dataset with energies", keys.FORCES: "md17, qm9_xtb, or an ASE file with forces",
            keys.STRESS: "an ASE file of periodic structures with stress"}


def check_labels(train, section: DataSection, loss: LossSection) -> dict[str, int]:
    """How many training structures carry each label; refuse, before anything is written, a loss
    term whose label no training structure carries (structures without it only leave the term)."""
    counts = label_counts(train)
    for label, weight in _WEIGHTS.items():
        if getattr(loss, weight) > 0 and not counts.get(label):
            name = repr(label)
            if section.dataset == "ase":
                key = section.options.get(f"{label}_key", label)
                name = f"{label} (data.options.{label}_key is {'null' if key is None else repr(key)})"
            raise ConfigError(
                f"loss.{weight} is {getattr(loss, weight)} but no training structure of {describe(section)} "
                f"carries {name}; set loss.{weight}: 0, or train on {_SOURCES[label]}"
            )
    return counts


def given_references(section: DataSection, dataset, train, max_atomic_number: int) -> Optional[torch.Tensor]:
    """Per-element energies [max_atomic_number + 1] (eV) that ``data.atom_reference`` gives (isolated atoms or
    a mapping), or None when they are fitted or not used; every training element needs one."""
    from ase.data import atomic_numbers, chemical_symbols

    choice = section.atom_reference
    if choice == "isolated":
        energies = getattr(dataset, "isolated_atom_energies", None)
        if not energies:
            raise ConfigError(f"data.atom_reference: isolated, but {describe(section)} has no isolated-atom frames "
                              "(one atom, no cell, config_type=IsolatedAtom in the extxyz comment line)")
        where = "isolated-atom frame"
    elif isinstance(choice, dict):
        energies = {atomic_numbers.get(element, element): float(value) for element, value in choice.items()}
        where = "entry in data.atom_reference"
    else:
        return None
    missing = sorted(elements(train) - set(energies))
    if missing:
        raise ConfigError(f"data.atom_reference: no {where} for {', '.join(chemical_symbols[z] for z in missing)}, "
                          "which the training structures hold")
    references = torch.zeros(max_atomic_number + 1, dtype=torch.float64)
    for z, energy in energies.items():
        if z <= max_atomic_number:
            references[z] = energy
    return references


class EpochBatches(Sampler):
    """Batches of dataset indices for one process, in an order fixed by (seed, epoch).

    The epoch's permutation is cut into global batches of ``batch_size ×
    world_size``; process ``rank`` takes the ``rank``-th contiguous slice of
    each. A final global batch with fewer structures than processes is
    dropped (a process with nothing to do would stall the others).
    ``start`` skips the first global batches, for a run resumed mid-epoch.
    """

    def __init__(self, num: int, batch_size: int, seed: int, epoch: int = 0, start: int = 0,
                 shuffle: bool = True, world_size: int = 1, rank: int = 0):
        self.num, self.batch_size, self.seed, self.epoch, self.start = num, batch_size, seed, epoch, start
        self.shuffle, self.world_size, self.rank = shuffle, world_size, rank

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num, generator=generator)
        else:
            order = torch.arange(self.num)
        batches = list(torch.split(order, self.batch_size * self.world_size))
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start:]:
            yield batch[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        return max(len(self.global_batches()) - self.start, 0)


def shard(num: int, world_size: int, rank: int) -> torch.Tensor:
    """Indices of this process's share of an evaluation set (every structure counted once overall)."""
    return torch.arange(rank, num, world_size)


__all__ = ["DATASETS", "Target", "build_dataset", "target_of", "load_splits", "check_labels", "given_references", "describe",
           "elements", "unseen_elements", "smallest_train_size", "EpochBatches", "shard"]
