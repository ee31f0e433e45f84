"""Which structures of a batch carry which label, for datasets of mixed labels.

A file may hold crystals with stress beside clusters without it, or frames
with energies only beside frames with forces. `ASEDataset` then fills each
missing label with zeros and records `keys.LABEL_MASK` [B, 3] (one column per
`keys.LABELS` entry); losses, error statistics and normalisation select the
labelled structures (or their atoms) with the functions here, so that a
missing label contributes nothing and is not counted in any mean. A batch
without the mask carries every label it has on every structure.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from geognn.data import keys


def structure_mask(batch, label: str) -> Optional[Tensor]:
    """[B] bool, True where the structure carries ``label`` (one of `keys.LABELS`); None when all do."""
    if keys.LABEL_MASK not in batch:
        return None
    mask = batch[keys.LABEL_MASK].reshape(-1, len(keys.LABELS))[:, keys.LABELS.index(label)]
    return None if bool(mask.all()) else mask


def atom_mask(batch, label: str) -> Optional[Tensor]:
    """[N] bool, True on the atoms of structures that carry ``label``; None when all do."""
    mask = structure_mask(batch, label)
    if mask is None:
        return None
    index = getattr(batch, keys.BATCH, None)
    if index is None:  # one structure, not a batch
        index = torch.zeros(batch[keys.ATOMIC_NUMBERS].shape[0], dtype=torch.long, device=mask.device)
    return mask[index]


def select(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``values`` on the labelled rows only (all of them when ``mask`` is None)."""
    return values if mask is None else values[mask]


def label_counts(dataset) -> dict[str, int]:
    """How many structures of a dataset (or a view of one, such as a split part) carry each label;
    labels none carries are absent."""
    if len(dataset) == 0:
        return {}
    first = dataset[0]
    present = [label for label in keys.LABELS if label in first]
    if keys.LABEL_MASK not in first:
        return {label: len(dataset) for label in present}
    if hasattr(dataset, "structure_values"):  # collated: no need to build every item
        values = dataset.structure_values(keys.LABEL_MASK).reshape(-1, len(keys.LABELS))
    else:
        values = torch.cat([item[keys.LABEL_MASK].reshape(-1, len(keys.LABELS)) for item in dataset])
    counts = {label: int(values[:, keys.LABELS.index(label)].sum()) for label in present}
    return {label: count for label, count in counts.items() if count}


__all__ = ["structure_mask", "atom_mask", "select", "label_counts"]
