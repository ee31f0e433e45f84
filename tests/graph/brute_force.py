"""O(N^2) brute-force radius graphs: the reference every neighbour-search backend is checked against.

Edges are sets of (sender j, receiver i) or (j, i, s0, s1, s2) with the lattice shift s of the
sender; ``|pos[j] + s @ cell - pos[i]| < r`` in float64.
"""

from __future__ import annotations

import numpy as np
import torch

def brute_molecule(pos: np.ndarray, r: float, batch: np.ndarray | None = None) -> set[tuple[int, int]]:
    """All (j, i), j != i, same structure, |pos[j] - pos[i]| < r."""
    n = len(pos)
    batch = np.zeros(n, dtype=int) if batch is None else np.asarray(batch)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # [j, i]
    mask = (dist < r) & (batch[:, None] == batch[None, :]) & ~np.eye(n, dtype=bool)
    return {(int(j), int(i)) for j, i in zip(*np.nonzero(mask))}


def shift_bound(pos: np.ndarray, r: float, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Generous |s_k| bound: zero along non-periodic directions.

    With dual vectors d_k of the periodic sub-lattice (d_k . a_l = delta_kl) and
    fractional coordinates f = pos . d_k, |x_j + s @ cell - x_i| >= |f_j - f_i + s_k| / |d_k|,
    so any image within r has |s_k| < r |d_k| + (max f_k - min f_k).
    """
    bound = np.zeros(3, dtype=int)
    if pbc.any():
        lattice = cell[pbc]  # [m, 3]
        dual = np.linalg.pinv(lattice).T  # [m, 3]
        assert np.allclose(dual @ lattice.T, np.eye(len(lattice)))
        frac = pos @ dual.T
        span = frac.max(0) - frac.min(0)
        bound[pbc] = np.ceil(r * np.linalg.norm(dual, axis=1) + span).astype(int) + 2
    return bound


def brute_periodic(pos, r, cells, pbcs, batch=None) -> set[tuple[int, int, int, int, int]]:
    """All (j, i, s0, s1, s2) with |pos[j] + s @ cell - pos[i]| < r, minus (i, i, 0)."""
    pos = np.asarray(pos, dtype=np.float64)
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
    pbcs = np.asarray(pbcs, dtype=bool).reshape(-1, 3)
    batch = np.zeros(len(pos), dtype=int) if batch is None else np.asarray(batch)
    edges = set()
    for b in range(len(cells)):
        atoms = np.nonzero(batch == b)[0]
        if len(atoms) == 0:
            continue
        p, cell, pbc = pos[atoms], cells[b], pbcs[b]
        n = shift_bound(p, r, cell, pbc)
        shifts = np.stack(
            np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        translations = shifts @ cell
        images = p[:, None, :] + translations[None, :, :]  # [j, K, 3]
        for a, i in enumerate(atoms):
            dist = np.linalg.norm(images - p[a], axis=-1)
            for j, k in zip(*np.nonzero(dist < r)):
                s = shifts[k]
                if j == a and not s.any():
                    continue
                edges.add((int(atoms[j]), int(i), int(s[0]), int(s[1]), int(s[2])))
    return edges


def edge_set(edge_index, edge_shift=None):
    ei = edge_index.tolist()
    if edge_shift is None:
        return [(j, i) for j, i in zip(*ei)]
    shifts = torch.round(edge_shift).long().tolist()
    return [(j, i, *s) for j, i, s in zip(*ei, shifts)]


