"""Graphs over atoms: radius graphs (molecules and periodic cells), bond graphs, edge geometry.

Radius searches run on a backend (`geognn.graph.neighbors`): vesin-torch by default,
torch-cluster when installed (``pip install "geognn[cluster]"``), chosen per call with
``backend=`` or per model with the config field ``neighbor_backend``.

Models choose their graph by name from `GRAPH_BUILDERS` (see `geognn.graph.builders`).
"""

from geognn.graph.bonds import BOND_SCALE, bond_atom_features, bond_graph, bond_orders, bonds_with_lengths
from geognn.graph.builders import (
    GRAPH_BUILDERS,
    GraphEdges,
    build_edges,
    edge_attributes,
    given_edges,
    register_graph_builder,
)
from geognn.graph.encodings import random_walk_pe
from geognn.graph.edges import edge_vectors, lattice_offsets
from geognn.graph.neighbors import (
    NEIGHBOR_BACKENDS,
    NeighborBackend,
    check_backend_name,
    installed_backends,
    register_neighbor_backend,
)
from geognn.graph.radius import periodic_radius_graph, pyg_radius_graph, radius_graph
from geognn.graph.triplets import triplets

__all__ = [
    "radius_graph",
    "periodic_radius_graph",
    "edge_vectors",
    "lattice_offsets",
    "triplets",
    "bond_graph",
    "bonds_with_lengths",
    "bond_orders",
    "bond_atom_features",
    "BOND_SCALE",
    "random_walk_pe",
    "GRAPH_BUILDERS",
    "GraphEdges",
    "build_edges",
    "given_edges",
    "edge_attributes",
    "register_graph_builder",
    "NEIGHBOR_BACKENDS",
    "NeighborBackend",
    "check_backend_name",
    "installed_backends",
    "register_neighbor_backend",
    "pyg_radius_graph",
]
