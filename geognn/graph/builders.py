"""The graph builders a model can choose from, by name.

A builder takes the atoms of a batch and returns `GraphEdges`: the directed edges (sender
``edge_index[0]``, receiver ``edge_index[1]``, both directions of every pair), the integer
lattice image of each sender for periodic structures, and optional per-edge attributes.
`geognn.models.EnergyModel` names its builder in the class attribute ``graph_builder`` and
passes the options from its config (``graph_options``); edge geometry is computed afterwards
from the positions, the same way for every builder.

    radius  every pair within ``cutoff`` Å (torch-cluster; periodic images included)
    bonds   covalent-radius bonds (`geognn.graph.bonds`), bond orders as ``edge_attr``

Register another with `register_graph_builder`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from torch import Tensor

from geognn.graph.bonds import BOND_SCALE, bond_orders, bonds_with_lengths
from geognn.graph.radius import periodic_radius_graph, radius_graph


class GraphEdges(NamedTuple):
    edge_index: Tensor  # [2, E] long (sender j, receiver i)
    edge_shift: Optional[Tensor] = None  # [E, 3] lattice image of the sender; None for molecules
    edge_attr: Optional[Tensor] = None  # [E, ...] builder-specific attributes (bonds: keys.BOND_ORDER, long)


GraphBuilder = Callable[..., GraphEdges]
GRAPH_BUILDERS: dict[str, GraphBuilder] = {}


def register_graph_builder(name: str) -> Callable[[GraphBuilder], GraphBuilder]:
    """Decorator adding ``builder(z, pos, batch, cell=None, pbc=None, **options)`` under ``name``."""

    def add(builder: GraphBuilder) -> GraphBuilder:
        if name in GRAPH_BUILDERS:
            raise ValueError(f"a graph builder named {name!r} is registered already")
        GRAPH_BUILDERS[name] = builder
        return builder

    return add


def build_edges(name: str, z: Tensor, pos: Tensor, batch: Tensor, cell=None, pbc=None, **options) -> GraphEdges:
    """Run the builder registered as ``name``."""
    if name not in GRAPH_BUILDERS:
        raise ValueError(f"unknown graph builder {name!r}; registered: {', '.join(sorted(GRAPH_BUILDERS))}")
    if cell is not None and pbc is None:
        raise ValueError("data has a 'cell' but no 'pbc'; give both for periodic structures")
    return GRAPH_BUILDERS[name](z, pos, batch, cell, pbc, **options)


@register_graph_builder("radius")
def radius_edges(z, pos, batch, cell=None, pbc=None, *, cutoff: float, max_num_neighbors=None) -> GraphEdges:
    if cell is None:
        return GraphEdges(radius_graph(pos, cutoff, batch, max_num_neighbors=max_num_neighbors))
    edge_index, edge_shift = periodic_radius_graph(pos, cutoff, cell, pbc, batch, max_num_neighbors=max_num_neighbors)
    return GraphEdges(edge_index, edge_shift)


@register_graph_builder("bonds")
def bond_edges(z, pos, batch, cell=None, pbc=None, *, scale: float = BOND_SCALE) -> GraphEdges:
    if z is None:
        raise ValueError("the bond graph needs the atomic numbers z")
    edge_index, edge_shift, length = bonds_with_lengths(z, pos, batch, scale=scale, cell=cell, pbc=pbc)
    return GraphEdges(edge_index, edge_shift, bond_orders(z, edge_index, length))
