"""Dataset statistics that set a model's normalisation before training.

* `fit_element_energies`: per-element energies by least squares on composition
  (E ≈ Σ_Z n_Z e_Z), the "E0s"/"per-species shifts" of MACE and NequIP;
  subtracting them leaves interaction energies of order 1 eV per atom.
* `avg_num_neighbors`: mean number of neighbours within the cutoff, which
  message-passing layers divide their sums by.
* `force_rms`: root mean square of force components, a natural energy scale
  for force-trained models.
"""

from __future__ import annotations

import warnings
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torch_geometric.loader import DataLoader

from geognn.data import keys
from geognn.data.labels import atom_mask, select, structure_mask


def _batches(dataset, batch_size: int) -> Iterator:
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; statistics need at least one structure")
    return iter(DataLoader(dataset, batch_size=batch_size, shuffle=False))


def composition(z: Tensor, batch: Tensor, num_graphs: int, num_elements: int) -> Tensor:
    """Element counts [B, num_elements] (float64): entry (b, Z) counts atoms of element Z in structure b."""
    counts = torch.zeros(num_graphs, num_elements, dtype=torch.float64)
    counts.index_put_((batch, z), torch.ones_like(z, dtype=torch.float64), accumulate=True)
    return counts


def fit_element_energies(
    dataset, energy_key: str = keys.ENERGY, max_atomic_number: Optional[int] = None, batch_size: int = 1024
) -> Tensor:
    """Per-element energies e_Z [max_atomic_number + 1] (float64) minimising Σ_b (E_b - Σ_Z n_bZ e_Z)².

    Elements absent from the dataset get 0. When the compositions do not
    determine every e_Z (e.g. one molecule's MD trajectory), the minimum-norm
    solution is returned, with a warning; its prediction Σ_Z n_Z e_Z of each
    structure is still the least-squares one.
    """
    rows, targets, seen = [], [], 0
    for batch in _batches(dataset, batch_size):
        if energy_key not in batch:
            raise KeyError(f"the dataset has no {energy_key!r} labels to fit element energies to")
        z = batch[keys.ATOMIC_NUMBERS]
        seen = max(seen, int(z.max()))
        labelled = structure_mask(batch, keys.ENERGY)
        rows.append((z, batch.batch, batch.num_graphs, labelled))
        targets.append(select(batch[energy_key].detach().to(torch.float64).reshape(-1), labelled))
    num_elements = (max_atomic_number if max_atomic_number is not None else seen) + 1
    if seen >= num_elements:
        raise ValueError(f"the dataset holds element Z={seen}, above max_atomic_number={num_elements - 1}")
    counts = torch.cat([select(composition(z, b, n, num_elements), mask) for z, b, n, mask in rows]).numpy()
    energies = torch.cat(targets).numpy()
    present = np.flatnonzero(counts.sum(0) > 0)
    solution, _, rank, _ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    if rank < present.size:
        warnings.warn(
            f"the dataset's compositions determine only {rank} combinations of its {present.size} elements' "
            "energies; the minimum-norm solution is returned, whose per-element values are not meaningful "
            "on their own (their sums over each structure are)",
            stacklevel=2,
        )
    result = torch.zeros(num_elements, dtype=torch.float64)
    result[torch.from_numpy(present)] = torch.from_numpy(solution)
    return result


def energy_residuals(dataset, element_energies: Tensor, energy_key: str = keys.ENERGY, batch_size: int = 1024) -> Tensor:
    """E_b - Σ_Z n_bZ e_Z for every structure with an energy [M] (float64), e.g. to set an energy scale."""
    residuals = []
    for batch in _batches(dataset, batch_size):
        reference = element_energies.to(torch.float64)[batch[keys.ATOMIC_NUMBERS]]
        per_structure = torch.zeros(batch.num_graphs, dtype=torch.float64).index_add_(0, batch.batch, reference)
        residual = batch[energy_key].detach().to(torch.float64).reshape(-1) - per_structure
        residuals.append(select(residual, structure_mask(batch, keys.ENERGY)))
    return torch.cat(residuals)


def avg_num_neighbors(dataset, cutoff: float, batch_size: int = 256) -> float:
    """Mean number of neighbours per atom within ``cutoff`` (Å), periodic images included."""
    from geognn.graph import periodic_radius_graph, radius_graph  # geognn.graph imports geognn.data.keys

    edges = atoms = 0
    for batch in _batches(dataset, batch_size):
        pos = batch[keys.POSITIONS]
        if keys.CELL in batch:
            edge_index, _ = periodic_radius_graph(pos, cutoff, batch[keys.CELL], batch[keys.PBC], batch.batch)
        else:
            edge_index = radius_graph(pos, cutoff, batch.batch)
        edges += edge_index.shape[1]
        atoms += pos.shape[0]
    return edges / atoms


def force_rms(dataset, forces_key: str = keys.FORCES, batch_size: int = 1024) -> float:
    """sqrt(mean F_ia²) over every force component in the dataset (eV/Å), labelled structures only."""
    total, count = 0.0, 0
    for batch in _batches(dataset, batch_size):
        if forces_key not in batch:
            raise KeyError(f"the dataset has no {forces_key!r} labels")
        forces = select(batch[forces_key].detach().to(torch.float64), atom_mask(batch, keys.FORCES))
        total += float(forces.square().sum())
        count += forces.numel()
    if count == 0:
        raise ValueError("no structure of the dataset carries forces")
    return (total / count) ** 0.5
