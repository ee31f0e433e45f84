"""In-memory datasets stored as concatenated tensors, and the splits they share.

Every geognn dataset keeps its structures the way PyG's `InMemoryDataset`
does: one `Data` whose node tensors are concatenated over structures and whose
graph tensors are stacked, plus ``slices`` offsets. Loaders that already hold
flat arrays (QM9, MD17) build that storage directly instead of creating and
collating 100,000 small `Data` objects, which is what makes a reload fast.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset

# Named splits: sizes of (train, validation, test); None takes the rest.
# "dimenet": 110,000 / 10,000 / rest of QM9, as in DimeNet (Gasteiger et al.,
# ICLR 2020) and DimeNet++ / PaiNN after it. The permutation is geognn's own
# (seeded), so the molecules differ from those papers' splits; only the sizes match.
NAMED_SPLITS = {
    "dimenet": (110_000, 10_000, None),
}

SplitSizes = Union[str, Sequence[Union[int, float, None]]]


@dataclass(frozen=True)
class TargetInfo:
    """What a dataset's ``energy`` label holds, declared once by the dataset.

    Attributes:
        name: the target's name ("energy", or a QM9 property such as "U0", "gap", "mu").
        unit: its unit ("eV", "D", ...).
        intensive: whether it does not grow with the number of atoms (a mean readout suits it).
        potential_energy: whether it is a potential-energy surface in eV whose negative
            gradient is a force (what an ASE calculator needs).
    """

    name: str
    unit: str
    intensive: bool
    potential_energy: bool


def file_fingerprint(paths: Sequence[Path]) -> str:
    """12 hex digits naming the contents of these files, in order, for cache file names.

    The digest is SHA-256 over each file's name and the SHA-256 of its bytes, so a cache follows
    what the files hold: an edit that keeps the size and the modification time
    (a copy with ``cp -p``, a restored backup, a coarse file-system clock) still
    gives another name, and a file moved to another folder keeps its cache.
    Hashing reads the files once per load (about 0.15 s for QM9's 234 MB on
    one core), small against parsing them.
    """
    digest = hashlib.sha256()
    for path in paths:
        contents = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                contents.update(chunk)
        digest.update(f"{Path(path).name}\0{contents.hexdigest()}\n".encode())
    return digest.hexdigest()[:12]


def split_sizes(num: int, sizes: SplitSizes) -> list[int]:
    """Resolve split sizes against a dataset length.

    ``sizes`` is a name from `NAMED_SPLITS` or a sequence whose entries are all
    integers (counts) or all floats (fractions of ``num``); at most one entry
    may be None, meaning "the rest". Without a None entry, counts may sum to
    less than ``num`` (the remainder is unused).
    """
    if isinstance(sizes, str):
        if sizes not in NAMED_SPLITS:
            raise ValueError(f"unknown split {sizes!r}; named splits are {sorted(NAMED_SPLITS)}, or give sizes")
        sizes = NAMED_SPLITS[sizes]
    sizes = list(sizes)
    if not sizes:
        raise ValueError("split sizes are empty; give e.g. (0.8, 0.1, None) or (110000, 10000, None)")
    if sum(s is None for s in sizes) > 1:
        raise ValueError(f"at most one split size may be None ('the rest'), got {sizes}")
    given = [s for s in sizes if s is not None]
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in given):
        raise TypeError(f"split sizes must be integers, fractions or None, got {sizes}")
    if any(isinstance(s, float) for s in given):
        if not all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in given) or sum(given) > 1.0 + 1e-9:
            raise ValueError(f"fractional split sizes must all be floats in [0, 1] summing to at most 1, got {sizes}")
        counts = [None if s is None else int(math.floor(s * num + 1e-9)) for s in sizes]
    else:
        if any(s < 0 for s in given):
            raise ValueError(f"split sizes must be non-negative, got {sizes}")
        counts = list(sizes)
    fixed = sum(c for c in counts if c is not None)
    if fixed > num:
        raise ValueError(
            f"split sizes {sizes} need {fixed} structures but the dataset has {num}; "
            "use smaller sizes or fractions such as (0.8, 0.1, None)"
        )
    return [num - fixed if c is None else c for c in counts]


def random_split_indices(num: int, sizes: SplitSizes, seed: int = 42) -> list[Tensor]:
    """Disjoint random index tensors of the given sizes; the same seed gives the same split."""
    counts = split_sizes(num, sizes)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(num, generator=generator)
    return list(torch.split(perm[: sum(counts)], counts))


def group_split_indices(groups: Tensor, sizes: SplitSizes, seed: int = 42) -> list[Tensor]:
    """Disjoint index tensors over structures that keep every group (molecule) in one part.

    ``groups`` [num] holds each structure's group id. The sizes are resolved against the
    number of structures as in `random_split_indices`; groups are taken in a seeded random
    order and each part receives whole groups until it holds at least its size (so a part
    may exceed its size by less than one group; "the rest" takes what remains).
    """
    groups = torch.as_tensor(groups).reshape(-1)
    counts = split_sizes(groups.numel(), sizes)
    unique, inverse = torch.unique(groups, return_inverse=True)
    if unique.numel() < len([c for c in counts if c > 0]):
        raise ValueError(f"only {unique.numel()} group(s) to share among {len(counts)} split parts; "
                         "a split by molecule needs more molecules than parts")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(unique.numel(), generator=generator)
    members = [[] for _ in range(unique.numel())]
    for index, group in enumerate(inverse.tolist()):
        members[group].append(index)
    parts, part, filled = [[] for _ in counts], 0, 0
    wanting = lambda after: sum(1 for c in counts[after:] if c > 0)  # parts after `part` that need a group
    for taken, group in enumerate(order.tolist()):
        left = unique.numel() - taken  # groups not yet placed, this one included
        while part < len(counts) - 1 and (filled >= counts[part] or (filled > 0 and left <= wanting(part + 1))):
            part, filled = part + 1, 0
        if part == len(counts) - 1 and filled >= counts[part]:
            break
        parts[part].extend(members[group])
        filled += len(members[group])
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


def flat_storage(
    node: Mapping[str, Tensor], graph: Mapping[str, Tensor], num_atoms: Tensor
) -> tuple[Data, dict[str, Tensor]]:
    """`InMemoryDataset` storage from node tensors [N, ...] and graph tensors [M, ...].

    ``num_atoms`` [M] gives each structure's atom count. A graph tensor of
    shape [M, ...] yields [1, ...] per structure (so ``energy`` [M] gives [1]
    per structure and [B] per batch, and ``cell`` [M, 3, 3] gives [1, 3, 3]).
    """
    num_atoms = torch.as_tensor(num_atoms, dtype=torch.long)
    ptr = torch.zeros(num_atoms.numel() + 1, dtype=torch.long)
    torch.cumsum(num_atoms, 0, out=ptr[1:])
    graph_slices = torch.arange(num_atoms.numel() + 1)
    slices = {}
    for key, value in node.items():
        if value.shape[0] != int(ptr[-1]):
            raise ValueError(f"node tensor {key!r} has {value.shape[0]} rows, expected {int(ptr[-1])}")
        slices[key] = ptr
    for key, value in graph.items():
        if value.shape[0] != num_atoms.numel():
            raise ValueError(f"graph tensor {key!r} has {value.shape[0]} rows, expected {num_atoms.numel()}")
        slices[key] = graph_slices
    return Data(**node, **graph), slices


class CollatedDataset(InMemoryDataset):
    """Base of geognn's in-memory datasets: `InMemoryDataset` without raw/processed folders.

    Subclasses fill ``self._data`` and ``self.slices`` (see `flat_storage` or
    ``InMemoryDataset.collate``). Indexing, slicing, ``len`` and PyG's
    `DataLoader` work as for any PyG dataset; `split` adds seeded splits.
    """

    def __init__(self, transform=None):
        super().__init__(root=None, transform=transform)

    @property
    def target_info(self) -> TargetInfo:
        """What ``energy`` holds: an energy in eV, extensive (datasets of other targets override this)."""
        return TargetInfo("energy", "eV", False, True)

    def structure_values(self, key: str) -> Tensor:
        """A per-structure value [len(self)] (e.g. ``group``), or row [len(self), k] of a fixed
        size (e.g. ``label_mask``), for every structure of this dataset or view, without building
        the structures."""
        structures = self.slices[key].shape[0] - 1
        sizes = self.slices[key].diff()
        if structures == 0 or not bool((sizes == sizes[0]).all()):
            raise ValueError(f"{key!r} is not a value (or a row of fixed size) per structure")
        values = self._data[key].reshape(structures, -1)
        if values.shape[1] == 1:
            values = values.reshape(-1)
        if self._indices is not None:
            values = values[torch.as_tensor(list(self.indices()), dtype=torch.long)]
        return values

    def split(self, sizes: SplitSizes = (0.8, 0.1, None), seed: int = 42) -> list["CollatedDataset"]:
        """Seeded random splits of this dataset (or of the subset it views).

        Args:
            sizes: a name from `NAMED_SPLITS` (e.g. ``"dimenet"``) or sizes as
                counts or fractions, one of which may be None for the rest.
            seed: the split is a function of (length, sizes, seed) only.

        Returns:
            One dataset view per size, in order (e.g. train, validation, test).
        """
        return [self.index_select(index) for index in random_split_indices(len(self), sizes, seed)]
