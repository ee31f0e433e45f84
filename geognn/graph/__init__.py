"""Radius graphs (molecules and periodic cells) and edge geometry."""

from geognn.graph.edges import edge_vectors, lattice_offsets
from geognn.graph.radius import periodic_radius_graph, radius_graph
from geognn.graph.triplets import triplets

__all__ = ["radius_graph", "periodic_radius_graph", "edge_vectors", "lattice_offsets", "triplets"]
