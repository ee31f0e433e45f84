"""Neighbour-search backends behind `radius_graph` and `periodic_radius_graph`.

A backend finds candidate pairs; `geognn.graph.radius` checks the input, settles pairs at the
cutoff exactly, sorts and limits, so every backend gives the same graph, edge for edge.

    vesin          vesin-torch (default dependency): cell lists in O(N), CPU and CUDA, wheels
                   for torch 2.3-2.14 on PyPI. One call per batch of molecules (structures laid
                   out apart from each other), one per periodic structure.
    torch-cluster  optional (``pip install "geognn[cluster]"``; no PyPI wheel, compiles against
                   the installed torch): one call per batch, periodic images replicated here.

``backend="auto"`` takes the first installed name of `AUTO_ORDER` for the device and the kind
of search; the order comes from ``benchmarks/radius_graph.py`` (table in benchmarks/README.md).
Register another backend with `register_neighbor_backend`.

A backend's search functions take float64 positions (detached) and the cutoff, and return
`Candidates`: every pair within the cutoff (self pairs (i, i) with a zero shift may be among
them: the caller drops them), and either None, when the backend measured in
float64 on the positions as given (its decision at the cutoff is final), or the distance it
measured for each pair. A backend whose arithmetic differs (positions moved or wrapped first)
searches up to `widened(r)` and returns its distances; the caller settles the pairs within
`SETTLE_BAND` of the cutoff with the exact distance.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from geognn._checks import periodic_gram

AUTO = "auto"

# Relative width of the band around the cutoff where a backend's own distances are not trusted
# (rounding differences are ~1e-15 relative; this leaves a wide margin at no cost).
SETTLE_BAND = 1e-9


def widened(r: float) -> float:
    """The search radius of a backend that returns its distances for settling."""
    return r * (1.0 + SETTLE_BAND)


class Candidates(NamedTuple):
    sender: Tensor  # [E] long (j)
    receiver: Tensor  # [E] long (i)
    shift: Optional[Tensor] = None  # [E, 3] long, lattice image of the sender in the basis searched; None for molecules
    distance: Optional[Tensor] = None  # [E] float64 as measured by the backend; None when already exact


class NeighborBackend:
    """One neighbour-search library: its import name, how to install it, its two searches."""

    name: str = ""
    module: str = ""
    install: str = ""

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def molecules(self, pos: Tensor, r: float, batch: Tensor, num_graphs: int) -> Candidates:
        """Pairs within ``r`` inside each structure of a batch (positions float64, [N, 3])."""
        raise NotImplementedError

    def periodic(self, pos: Tensor, r: float, cell: Tensor, pbc: Tensor, batch: Tensor) -> Candidates:
        """Pairs (j, i, s) with ``|pos[j] + s @ cell - pos[i]| < r``, without (i, i, 0).

        ``cell`` [B, 3, 3] float64 is Minkowski-reduced along the periodic directions; the
        shifts returned are in that basis.
        """
        raise NotImplementedError


NEIGHBOR_BACKENDS: dict[str, NeighborBackend] = {}

# Preference of "auto", per device type and kind of search, fastest first (measured on CPU,
# benchmarks/README.md). CUDA has not been measured yet: the default dependency comes first.
AUTO_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "molecules"): ("vesin", "torch-cluster"),
    ("cpu", "periodic"): ("vesin", "torch-cluster"),
    ("cuda", "molecules"): ("vesin", "torch-cluster"),
    ("cuda", "periodic"): ("vesin", "torch-cluster"),
}


def register_neighbor_backend(backend: NeighborBackend) -> NeighborBackend:
    if backend.name in NEIGHBOR_BACKENDS or backend.name == AUTO:
        raise ValueError(f"a neighbour-list backend named {backend.name!r} is registered already")
    NEIGHBOR_BACKENDS[backend.name] = backend
    return backend


def installed_backends() -> list[str]:
    """Names of the registered backends whose library is importable here."""
    return [name for name, backend in NEIGHBOR_BACKENDS.items() if backend.is_installed()]


def check_backend_name(name) -> str:
    """``name`` if it is "auto" or a registered backend (installed or not); ValueError otherwise."""
    if name == AUTO or name in NEIGHBOR_BACKENDS:
        return name
    raise ValueError(
        f"unknown neighbour-list backend {name!r}; choose 'auto' or one of {', '.join(NEIGHBOR_BACKENDS)}"
    )


_RESOLVED: dict[tuple[str, str, str], NeighborBackend] = {}


def neighbor_backend(name: str, device: torch.device, kind: str) -> NeighborBackend:
    """The backend ``name`` stands for on ``device`` for ``kind`` ("molecules" or "periodic").

    An unknown name raises ValueError; a backend that is not installed raises ImportError
    with the command that installs it.
    """
    key = (name, device.type, kind)
    backend = _RESOLVED.get(key)
    if backend is not None:
        return backend
    check_backend_name(name)
    if name == AUTO:
        order = AUTO_ORDER.get((device.type, kind), tuple(NEIGHBOR_BACKENDS))
        found = [n for n in order if n in NEIGHBOR_BACKENDS and NEIGHBOR_BACKENDS[n].is_installed()]
        if not found:
            raise ImportError(
                f"no neighbour-list backend is installed for {device.type}; "
                f"install the default one: {NEIGHBOR_BACKENDS['vesin'].install}"
            )
        backend = NEIGHBOR_BACKENDS[found[0]]
    else:
        backend = NEIGHBOR_BACKENDS[name]
        if not backend.is_installed():
            raise ImportError(
                f"the neighbour-list backend {name!r} is not installed: {backend.install} "
                f"(or use backend='auto', which picks from {', '.join(installed_backends()) or 'nothing installed'})"
            )
    _RESOLVED[key] = backend
    return backend


# --------------------------------------------------------------------------- vesin


class Vesin(NeighborBackend):
    name = "vesin"
    module = "vesin_torch"
    install = 'pip install vesin-torch (a dependency of geognn: reinstall geognn)'

    # On CUDA vesin allocates a fixed number of pairs per atom and refuses a search that
    # overflows it; the exact search retries with this many times more room.
    _CUDA_GROWTH = 4
    _THREADED_ATOMS = 10_000

    def __init__(self):
        self._lists: dict[tuple[float, str, int], object] = {}  # (cutoff, device type, threads) -> NeighborList

    def _list(self, r: float, device: torch.device, threads: int):
        key = (r, device.type, threads)
        nl = self._lists.get(key)
        if nl is None:
            from vesin_torch import NeighborList

            if len(self._lists) > 64:  # one calculator per cutoff in use; forget old ones
                self._lists.clear()
            nl = self._lists[key] = NeighborList(cutoff=r, full_list=True, n_threads=threads)
        return nl

    def _compute(self, pos: Tensor, box: Tensor, periodic: Tensor, r: float, quantities: str):
        # Threads pay off only for large systems on CPU (periodic Si, 5 Å: 1 thread is faster
        # up to 4,096 atoms, 2 threads 1.25x faster at 32,768).
        threads = torch.get_num_threads() if pos.shape[0] >= self._THREADED_ATOMS else 1
        nl = self._list(r, pos.device, threads)
        if pos.device.type != "cuda":
            return nl.compute(pos, box, periodic, quantities)
        per_point = max(64, math.ceil(r**3))
        while True:
            try:
                return nl.compute(pos, box, periodic, quantities)
            except RuntimeError as err:
                if "exceeds the maximum capacity" not in str(err):
                    raise
                per_point *= self._CUDA_GROWTH
                os.environ["VESIN_CUDA_MAX_PAIRS_PER_POINT"] = str(per_point)

    def molecules(self, pos, r, batch, num_graphs):
        if num_graphs > 1:
            pos = _lay_out_apart(pos, widened(r), batch, num_graphs)
        box = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device)
        periodic = torch.zeros(3, dtype=torch.bool, device=pos.device)
        receiver, sender, distance = self._compute(pos, box, periodic, widened(r), "ijd")
        return Candidates(sender, receiver, None, distance)

    def periodic(self, pos, r, cell, pbc, batch):
        counts = torch.bincount(batch, minlength=cell.shape[0]).tolist()
        starts = itertools.accumulate([0] + counts[:-1])
        found = []
        for b, (start, count) in enumerate(zip(starts, counts)):
            if count == 0:
                continue
            box = _complete_box(cell[b], pbc[b])
            receiver, sender, shift, distance = self._compute(pos[start:start + count], box, pbc[b], widened(r), "ijSd")
            found.append((sender + start, receiver + start, shift, distance))
        sender, receiver, shift, distance = (torch.cat(parts) for parts in zip(*found))
        return Candidates(sender, receiver, shift.long(), distance)


def _lay_out_apart(pos: Tensor, r: float, batch: Tensor, num_graphs: int) -> Tensor:
    """The structures of a batch moved along a line, each more than ``r`` from every other.

    Lets one non-periodic search cover the whole batch without pairs between structures. A
    line leaves the cell list fewer empty cells than a cube (32 QM9 molecules: 0.10 vs 0.13 ms
    per search; 256: 1.0 vs 1.6 ms). Moving changes the rounding of coordinate differences (by
    about 1e-16 of the line's length), which the caller's exact settling at the cutoff absorbs.
    """
    index = batch.unsqueeze(1).expand(-1, 3)
    low = pos.new_full((num_graphs, 3), math.inf).scatter_reduce_(0, index, pos, "amin")
    high = pos.new_full((num_graphs, 3), -math.inf).scatter_reduce_(0, index, pos, "amax")
    spacing = float((high[:, 0] - low[:, 0]).max()) + r + 0.5
    move = -low  # [B, 3]: each structure's lowest corner to its place on the x axis
    move[:, 0] += torch.arange(num_graphs, device=pos.device, dtype=pos.dtype) * spacing
    return pos + move[batch]


def _complete_box(cell: Tensor, pbc: Tensor) -> Tensor:
    """The cell with rows along non-periodic directions replaced by unit vectors normal to the rest.

    Those rows may be zero or arbitrary (ignored by definition); vesin needs a box of non-zero
    volume to bin atoms in. The replacement never enters a shift (shifts along them are zero).
    """
    if bool(pbc.all()):
        return cell
    box = cell.clone()
    periodic_rows = [box[k] for k in range(3) if pbc[k]]
    if not periodic_rows:
        return torch.eye(3, dtype=cell.dtype, device=cell.device)
    if len(periodic_rows) == 1:
        a = periodic_rows[0] / periodic_rows[0].norm()
        helper = torch.zeros_like(a)
        helper[int(torch.argmin(a.abs()))] = 1.0
        b = torch.linalg.cross(a, helper)
        b = b / b.norm()
        normals = [b, torch.linalg.cross(a, b)]
    else:
        c = torch.linalg.cross(periodic_rows[0], periodic_rows[1])
        normals = [c / c.norm()]
    for k in range(3):
        if not pbc[k]:
            box[k] = normals.pop(0)
    return box


register_neighbor_backend(Vesin())


# --------------------------------------------------------------------------- torch-cluster


class TorchCluster(NeighborBackend):
    name = "torch-cluster"
    module = "torch_cluster"
    install = 'pip install "geognn[cluster]" (compiles torch-cluster against the installed torch)'

    # On CUDA torch-cluster allocates receivers x max_num_neighbors slots, so the exact search
    # starts here and doubles until no receiver is full. On CPU it allocates per neighbour
    # found and the cap can simply be the node count.
    _CUDA_INITIAL_CAP = 64

    def molecules(self, pos, r, batch, num_graphs):
        import torch_cluster  # noqa: F401 (registers torch.ops.torch_cluster)

        # The library's own op, as its radius_graph calls it, without the Python around it
        # (self pairs, which that removes, are dropped by the caller anyway).
        pos, ptr = pos.contiguous(), None
        if num_graphs > 1:
            ptr = torch.bucketize(torch.arange(num_graphs + 1, device=pos.device), batch)

        def search(cap: int) -> Tensor:
            return torch.ops.torch_cluster.radius(pos, pos, ptr, ptr, r, cap, 1)  # (receiver, sender)

        receiver, sender = self._exact(search, pos.shape[0], pos.device)
        return Candidates(sender, receiver)  # measured in float64 on the given positions: exact

    def periodic(self, pos, r, cell, pbc, batch):
        import torch_cluster

        # Replicate the atoms wrapped into the cell over the images the cutoff can reach.
        lattice = cell * pbc.unsqueeze(-1)  # [B, 3, 3], zero rows off-pbc
        dual = torch.linalg.inv(periodic_gram(cell, pbc)) @ lattice
        frac = torch.einsum("ni,nki->nk", pos, dual[batch])
        wrap = torch.floor(frac)  # [N, 3], zero along non-periodic directions
        wrapped = pos - torch.einsum("nk,nki->ni", wrap, lattice[batch])
        # Planes of the lattice are 1/|dual_k| apart and wrapped fractional coordinates differ by < 1.
        reach = (torch.floor(r * dual.norm(dim=-1)) + 1).long() * pbc  # [B, 3]
        shifts = _shift_grid(reach.amax(0).tolist(), pos.device)  # [K, 3] long
        allowed = (shifts.abs().unsqueeze(0) <= reach.unsqueeze(1)).all(-1)  # [B, K]
        image_atom, image_shift = torch.nonzero(allowed[batch], as_tuple=True)
        image_pos = wrapped[image_atom] + torch.einsum(
            "ek,eki->ei", shifts[image_shift].to(pos.dtype), lattice[batch[image_atom]]
        )

        def search(cap: int) -> Tensor:
            return torch_cluster.radius(
                image_pos, wrapped, widened(r), batch[image_atom], batch, max_num_neighbors=cap
            ).flip(0)

        image, receiver = self._exact(search, image_pos.shape[0], pos.device, receiver_row=1)
        sender = image_atom[image]
        shift = shifts[image_shift[image]] - wrap[sender].long() + wrap[receiver].long()
        distance = torch.linalg.vector_norm(image_pos[image] - wrapped[receiver], dim=-1)  # zero for self pairs
        return Candidates(sender, receiver, shift, distance)

    def _exact(self, search, num_sources: int, device: torch.device, receiver_row: int = 0) -> Tensor:
        """Run ``search(cap)`` -> index pairs with a cap no receiver (row ``receiver_row``) reaches."""
        if device.type != "cuda":
            return search(max(num_sources, 1))
        cap = self._CUDA_INITIAL_CAP
        while True:
            found = search(cap)
            if found.shape[1] == 0 or int(torch.bincount(found[receiver_row]).max()) < cap:
                return found
            cap *= 2


def _shift_grid(reach: list[int], device: torch.device) -> Tensor:
    """All integer vectors s with |s_k| <= reach[k], the zero shift first, [K, 3]."""
    ranges = [[0] + [s for n in range(1, m + 1) for s in (n, -n)] for m in reach]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.long, device=device)


register_neighbor_backend(TorchCluster())
