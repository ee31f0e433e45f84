"""Radius graphs (molecules and periodic cells) and edge geometry."""

from geognn.graph.edges import edge_vectors, lattice_offsets
from geognn.graph.radius import periodic_radius_graph, radius_graph

__all__ = ["radius_graph", "periodic_radius_graph", "edge_vectors", "lattice_offsets"]
