"""Energy models and their registry.

``build_model("egnn")`` gives a small working model; keyword arguments
override fields of the model's config dataclass (``MODELS[name].Config``).
"""

from __future__ import annotations

from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig
from geognn.models.bond_graph import GAT, GCN, GIN, BondGraphConfig, BondGraphModel, GATConfig, GraphSAGE
from geognn.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from geognn.models.dimenet import DimeNet, DimeNetConfig, DimeNetPP, DimeNetPPConfig
from geognn.models.egnn import EGNN, EGNNConfig
from geognn.models.gps import GPS, GPSConfig
from geognn.models.mace import MACE, MACEConfig
from geognn.models.mpnn import MPNN, MPNNConfig
from geognn.models.nequip import NequIP, NequIPConfig
from geognn.models.painn import PaiNN, PaiNNConfig
from geognn.models.schnet import SchNet, SchNetConfig
from geognn.nn.mlp import lookup

MODELS: dict[str, type[EnergyModel]] = {"egnn": EGNN, "dimenet": DimeNet, "dimenet++": DimeNetPP, "nequip": NequIP,
                                     "schnet": SchNet, "painn": PaiNN, "mace": MACE,
                                     "gcn": GCN, "sage": GraphSAGE, "gat": GAT, "gin": GIN, "mpnn": MPNN, "gps": GPS}


for _name, _cls in MODELS.items():  # the registry is the one source of model names
    _cls.name = _name


def build_model(name: str, **kwargs) -> EnergyModel:
    """Construct ``MODELS[name]`` from plain values; unknown names or options raise ValueError."""
    return lookup(MODELS, name, "model").from_config(kwargs)


__all__ = ["MODELS", "build_model", "EnergyModel", "EnergyModelConfig", "AtomGraph", "EGNN", "EGNNConfig",
           "DimeNet", "DimeNetConfig", "DimeNetPP", "DimeNetPPConfig", "NequIP", "NequIPConfig", "MACE", "MACEConfig",
           "SchNet", "SchNetConfig", "PaiNN", "PaiNNConfig", "BondGraphModel", "BondGraphConfig",
           "GCN", "GraphSAGE", "GAT", "GATConfig", "GIN", "MPNN", "MPNNConfig", "GPS", "GPSConfig",
           "save_checkpoint", "load_checkpoint", "model_from_checkpoint"]
