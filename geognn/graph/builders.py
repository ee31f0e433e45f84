"""The graph builders a model can choose from, by name.

A builder takes the atoms of a batch and returns `GraphEdges`: the directed edges (sender
``edge_index[0]``, receiver ``edge_index[1]``, both directions of every pair), the integer
lattice image of each sender for periodic structures, and optional per-edge attributes.
`geognn.models.EnergyModel` names its builder in the class attribute ``graph_builder`` and
passes the options from its config (``graph_options``); edge geometry is computed afterwards
from the positions, the same way for every builder.

    radius  every pair within ``cutoff`` Å (periodic images included), searched by ``backend``
            (`geognn.graph.neighbors`: "auto", "vesin", "torch-cluster")
    bonds   covalent-radius bonds (`geognn.graph.bonds`), bond orders as ``edge_attr``

Register another with `register_graph_builder`. A builder may also name how it decorates
edges it did not find itself (``attributes``): `given_edges` checks an explicitly given edge
list and attaches those attributes, for models called on a graph of the caller's choosing
(``model(data, edge_index=...)``, e.g. the star graphs of `geognn.expressivity`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from geognn.graph.bonds import BOND_SCALE, bond_orders, bonds_with_lengths
from geognn.graph.neighbors import AUTO
from geognn.graph.radius import periodic_radius_graph, radius_graph


class GraphEdges(NamedTuple):
    edge_index: Tensor  # [2, E] long (sender j, receiver i)
    edge_shift: Optional[Tensor] = None  # [E, 3] lattice image of the sender; None for molecules
    edge_attr: Optional[Tensor] = None  # [E, ...] builder-specific attributes (bonds: keys.BOND_ORDER, long)


GraphBuilder = Callable[..., GraphEdges]
EdgeAttributes = Callable[[Tensor, Tensor, Tensor], Tensor]  # (z, edge_index, edge_len) -> edge_attr
GRAPH_BUILDERS: dict[str, GraphBuilder] = {}
EDGE_ATTRIBUTES: dict[str, EdgeAttributes] = {}


def register_graph_builder(
    name: str, attributes: Optional[EdgeAttributes] = None
) -> Callable[[GraphBuilder], GraphBuilder]:
    """Decorator adding ``builder(z, pos, batch, cell=None, pbc=None, **options)`` under ``name``.

    ``attributes(z, edge_index, edge_len)``, when the builder attaches ``edge_attr``, computes
    them for edges given explicitly (`given_edges`).
    """

    def add(builder: GraphBuilder) -> GraphBuilder:
        if name in GRAPH_BUILDERS:
            raise ValueError(f"a graph builder named {name!r} is registered already")
        GRAPH_BUILDERS[name] = builder
        if attributes is not None:
            EDGE_ATTRIBUTES[name] = attributes
        return builder

    return add


def build_edges(name: str, z: Tensor, pos: Tensor, batch: Tensor, cell=None, pbc=None, **options) -> GraphEdges:
    """Run the builder registered as ``name``."""
    if name not in GRAPH_BUILDERS:
        raise ValueError(f"unknown graph builder {name!r}; registered: {', '.join(sorted(GRAPH_BUILDERS))}")
    if cell is not None and pbc is None:
        raise ValueError("data has a 'cell' but no 'pbc'; give both for periodic structures")
    return GRAPH_BUILDERS[name](z, pos, batch, cell, pbc, **options)


def given_edges(
    edge_index: Tensor, batch: Tensor, edge_shift: Optional[Tensor] = None, periodic: bool = False
) -> GraphEdges:
    """Check an explicitly given graph over the atoms of a batch and return it as `GraphEdges`.

    ``edge_index`` [2, E] long (sender, receiver), any direction pattern (a star graph may be
    directed); no self-loops (their edge vector is zero and has no direction), no edge between
    two structures of a batch. Periodic structures need ``edge_shift`` [E, 3] (integer lattice
    image of each sender); molecules must not have one. The builder's edge attributes are
    attached afterwards from the edge lengths (`edge_attributes`).
    """
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = list(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must be a [2, E] tensor of (sender, receiver) atom indices, got {shape}")
    if edge_index.dtype != torch.long:
        raise TypeError(f"edge_index must be a long tensor, got {edge_index.dtype}")
    num_atoms = batch.shape[0]
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_atoms):
        raise ValueError(f"edge_index refers to atoms outside 0..{num_atoms - 1}")
    if bool((edge_index[0] == edge_index[1]).any()) and not periodic:
        raise ValueError("edge_index has self-loops (sender == receiver): an edge needs two distinct atoms")
    if bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError("edge_index joins atoms of different structures in the batch")
    if periodic:
        if edge_shift is None:
            raise ValueError("periodic structures need edge_shift [E, 3] with the explicit edge_index")
        if tuple(edge_shift.shape) != (edge_index.shape[1], 3):
            raise ValueError(f"edge_shift must have shape [{edge_index.shape[1]}, 3], got {list(edge_shift.shape)}")
        loops = (edge_index[0] == edge_index[1]) & (edge_shift == 0).all(dim=-1)
        if bool(loops.any()):
            raise ValueError("edge_index has self-loops (same atom, same image): an edge needs two distinct atoms")
    elif edge_shift is not None:
        raise ValueError("edge_shift is for periodic structures; these have no cell")
    return GraphEdges(edge_index, edge_shift)


def edge_attributes(name: str, z: Tensor, edge_index: Tensor, edge_len: Tensor) -> Optional[Tensor]:
    """What builder ``name`` attaches to the given edges (None for builders that attach nothing)."""
    attributes = EDGE_ATTRIBUTES.get(name)
    return None if attributes is None else attributes(z, edge_index, edge_len)


@register_graph_builder("radius")
def radius_edges(z, pos, batch, cell=None, pbc=None, *, cutoff: float, max_num_neighbors=None,
                 backend: str = AUTO) -> GraphEdges:
    if cell is None:
        return GraphEdges(radius_graph(pos, cutoff, batch, max_num_neighbors=max_num_neighbors, backend=backend))
    edge_index, edge_shift = periodic_radius_graph(pos, cutoff, cell, pbc, batch, max_num_neighbors=max_num_neighbors,
                                                   backend=backend)
    return GraphEdges(edge_index, edge_shift)


@register_graph_builder("bonds", attributes=bond_orders)
def bond_edges(z, pos, batch, cell=None, pbc=None, *, scale: float = BOND_SCALE, backend: str = AUTO) -> GraphEdges:
    if z is None:
        raise ValueError("the bond graph needs the atomic numbers z")
    edge_index, edge_shift, length = bonds_with_lengths(z, pos, batch, scale=scale, cell=cell, pbc=pbc, backend=backend)
    return GraphEdges(edge_index, edge_shift, bond_orders(z, edge_index, length))
