"""Export a trained model once, run it in the engines metatomic serves (ASE, i-PI, LAMMPS, ...).

``to_metatomic(model)`` wraps a 3D `EnergyModel` as a metatomic ``AtomisticModel``: a
TorchScript module that takes the engine's systems and neighbour lists and returns the
energy (per structure or per atom). The engine differentiates it for forces and stress,
so nothing but the energy is exported. ``save_metatomic(model, path)`` (and ``geognn
export CHECKPOINT -o model.pt``) writes it to a file that metatomic loads without geognn.

What the exported model declares:

- ``atomic_types``: the elements the model was trained on (the checkpoint's elements, or
  the model's own element table), so an engine refuses others before running.
- ``interaction_range``: how far an atom's energy can see, ``EnergyModel.interaction_range``
  (``hops × cutoff``: the number of message-passing steps, one more for DimeNet's
  messages on edges). Engines that split a system over processes (LAMMPS with MPI) keep
  that much of the neighbouring domains as ghost atoms, so each atom's energy is exact.
- units eV and Å, the model's dtype, and the devices it can run on.

The graph is the engine's full neighbour list at the model's cutoff (``strict``: no pair
beyond it), and the edge vectors are recomputed from the system's positions and cell, so
forces and the stress come from autograd the same way as in `GeoGNNCalculator`.
"""


import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from geognn.models.base import AtomGraph, EnergyModel


def _import_metatomic():
    """Import metatensor/metatomic with torch's own ``index_select``.

    torch_geometric 2.8 (imported by geognn.models) replaces ``torch.index_select`` with a Python
    function for its HashTensor; metatensor-operations compiles functions that call it with
    TorchScript at import time, which then fails. The original is put back for that import only.
    """
    patched = torch.index_select
    original = getattr(sys.modules.get("torch_geometric.hash_tensor"), "_old_index_select", patched)
    torch.index_select = original
    try:
        import metatensor.torch  # noqa: F401  (its TorchScript functions compile here)
        import metatomic.torch  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "geognn.export needs metatomic-torch: pip install 'geognn[export]' (or pip install metatomic-torch)"
        ) from error
    finally:
        torch.index_select = patched


_import_metatomic()

from metatensor.torch import Labels, TensorBlock, TensorMap  # noqa: E402
from metatomic.torch import (AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput,  # noqa: E402
                             NeighborListOptions, System)


ENERGY_UNIT = "eV"
LENGTH_UNIT = "angstrom"


class MetatomicEnergy(torch.nn.Module):
    """The module inside the exported ``AtomisticModel``: metatomic systems -> ``{"energy": TensorMap}``.

    Systems are concatenated into one batch; each system's neighbour list gives the graph's
    edges (``first_atom`` receives from ``second_atom`` in the image ``cell_shift``).
    """

    def __init__(self, model: EnergyModel):
        super().__init__()
        self.model = model
        self.neighbors = NeighborListOptions(cutoff=float(model.config.cutoff), full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbors]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs or len(systems) == 0:
            return results
        device = systems[0].positions.device
        types: List[Tensor] = []
        positions: List[Tensor] = []
        batch: List[Tensor] = []
        atoms: List[Tensor] = []  # each atom's index within its system
        senders: List[Tensor] = []
        receivers: List[Tensor] = []
        offsets: List[Tensor] = []
        shifts: List[Tensor] = []
        start = 0
        for index, system in enumerate(systems):
            count = len(system)
            pairs = system.get_neighbor_list(self.neighbors).samples.values  # [P, 5]: first, second, shift a b c
            shift = pairs[:, 2:5].to(torch.long)
            types.append(system.types.to(torch.long))
            positions.append(system.positions)
            batch.append(torch.full((count,), index, dtype=torch.long, device=device))
            atoms.append(torch.arange(count, device=device))
            receivers.append(pairs[:, 0].to(torch.long) + start)
            senders.append(pairs[:, 1].to(torch.long) + start)
            offsets.append(shift.to(system.positions.dtype) @ system.cell)  # rows of the cell: lattice vectors
            shifts.append(shift)
            start += count
        z = torch.cat(types)
        pos = torch.cat(positions)
        node_batch = torch.cat(batch)
        edge_index = torch.stack([torch.cat(senders), torch.cat(receivers)])
        edge_offset = torch.cat(offsets)
        edge_vec = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1]) + edge_offset
        edge_len = torch.sqrt(edge_vec.pow(2).sum(-1))
        graph = AtomGraph(edge_index, edge_vec, edge_len, edge_offset, node_batch, len(systems),
                          torch.cat(shifts), None)
        node_energy = self.model.node_energies(z, pos, graph)  # [N]

        atom = torch.cat(atoms)
        samples = torch.stack([node_batch, atom], dim=1).to(torch.int32)
        if selected_atoms is not None:  # domain decomposition: energies of this domain's atoms only
            chosen = selected_atoms.values.to(device).to(torch.long)  # [S, 2]: system, atom
            keep = torch.isin(node_batch * (start + 1) + atom, chosen[:, 0] * (start + 1) + chosen[:, 1])
            node_energy, node_batch, samples = node_energy[keep], node_batch[keep], samples[keep]

        if outputs["energy"].sample_kind == "atom":
            block = TensorBlock(values=node_energy.unsqueeze(-1), samples=Labels(["system", "atom"], samples),
                                components=torch.jit.annotate(List[Labels], []),
                                properties=Labels(["energy"], torch.zeros((1, 1), dtype=torch.int32, device=device)))
        else:
            energy = torch.zeros(len(systems), dtype=node_energy.dtype, device=device)
            energy = energy.index_add(0, node_batch, node_energy)
            system_index = torch.arange(len(systems), dtype=torch.int32, device=device).unsqueeze(-1)
            block = TensorBlock(values=energy.unsqueeze(-1), samples=Labels(["system"], system_index),
                                components=torch.jit.annotate(List[Labels], []),
                                properties=Labels(["energy"], torch.zeros((1, 1), dtype=torch.int32, device=device)))
        results["energy"] = TensorMap(Labels(["_"], torch.zeros((1, 1), dtype=torch.int32, device=device)), [block])
        return results


def to_metatomic(model: EnergyModel, atomic_types: Optional[Sequence[int]] = None, *, name: Optional[str] = None,
                 description: str = "", devices: Optional[Sequence[str]] = None) -> AtomisticModel:
    """``model`` as a metatomic ``AtomisticModel`` (energy in eV, lengths in Å; forces and stress by the engine).

    Args:
        model: a 3D `EnergyModel` (one that uses positions); it is copied, in eval mode.
        atomic_types: the elements the model accepts (default: the model's own element table,
            or every element of its embedding).
        name: metadata shown by the engines.
        description: metadata shown by the engines.
        devices: the devices it declares (default: "cuda" when the model is there, then "cpu").
    """
    import copy

    if not isinstance(model, EnergyModel):
        raise TypeError(f"to_metatomic takes a geognn EnergyModel, got {type(model).__name__}")
    if not model.uses_positions:
        raise ValueError(f"{type(model).__name__} sees atoms only through its bond graph ({model.graph_builder!r}): it "
                         "has no forces and needs bonds that MD engines do not give; only 3D models can be exported")
    if not model.size_extensive:
        raise ValueError(f"{type(model).__name__} has a global readout, so its energy has no finite interaction "
                         "range and cannot be split over an engine's domains; only size-extensive 3D models export")
    if model.config.max_num_neighbors is not None:
        raise ValueError(f"this {type(model).__name__} keeps only its {model.config.max_num_neighbors} nearest "
                         "neighbours, which an engine's neighbour list cannot reproduce; export a model built "
                         "with max_num_neighbors null")
    module = MetatomicEnergy(copy.deepcopy(model)).eval()
    types = [int(t) for t in (atomic_types if atomic_types is not None else model.atomic_types())]
    if devices is None:
        devices = ["cuda", "cpu"] if model.device.type == "cuda" else ["cpu", "cuda"]
    dtype = {torch.float64: "float64", torch.float32: "float32"}.get(model.dtype)
    if dtype is None:
        raise ValueError(f"metatomic runs float32 or float64 models, this one is {model.dtype}")
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit=ENERGY_UNIT, sample_kind="atom")},
        atomic_types=types,
        interaction_range=float(model.interaction_range()),
        length_unit=LENGTH_UNIT,
        supported_devices=list(devices),
        dtype=dtype,
    )
    metadata = ModelMetadata(name=name or f"geognn {type(model).__name__}", description=description)
    return AtomisticModel(module, metadata, capabilities)


# Compiled libraries that torch_geometric loads on import (its optional companions). metatomic
# records every loaded library as an extension the model needs, and engines then look for them;
# the exported code calls none of them (tests load it where they are absent), so they are left out.
_PYG_COMPANIONS = ("torch_scatter", "torch_sparse", "torch_cluster", "torch_spline_conv", "pyg_lib")


def save_metatomic(model: EnergyModel, path: Union[str, Path], **kwargs) -> Path:
    """Write ``to_metatomic(model, **kwargs)`` to ``path`` (TorchScript; loads without geognn)."""
    path = Path(path)
    exported = to_metatomic(model, **kwargs)
    loaded = torch.ops.loaded_libraries
    torch.ops.loaded_libraries = {library for library in loaded
                                  if not any(name in Path(library).parts for name in _PYG_COMPANIONS)}
    try:
        exported.save(str(path))
    finally:
        torch.ops.loaded_libraries = loaded
    return path


def export_checkpoint(checkpoint: Union[str, Path], output: Union[str, Path], dtype: Optional[torch.dtype] = None,
                      overwrite: bool = False) -> Path:
    """``geognn export``: the checkpoint's model as a metatomic file at ``output``.

    The checkpoint must predict a potential energy in eV (as for `GeoGNNCalculator`); the
    exported model accepts the elements it was trained on. ``dtype`` defaults to the dtype the
    weights were saved in. An existing ``output`` is refused unless ``overwrite``.
    """
    from geognn.models.checkpoint import (checkpoint_normalization, load_energy_checkpoint, model_from_checkpoint,
                                          warn_if_trained_without_forces)

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite (overwrite=True) to replace it")
    loaded = load_energy_checkpoint(checkpoint)
    warn_if_trained_without_forces(loaded, checkpoint)
    model = model_from_checkpoint(loaded, dtype=dtype)
    if model.config.readout != "sum":
        raise ValueError(f"{checkpoint}: the model's readout is {model.config.readout!r}, not an extensive energy")
    elements = checkpoint_normalization(loaded).get("elements")
    description = f"{loaded['model_name']} exported by geognn from {Path(checkpoint).name}"
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_metatomic(model, output, atomic_types=elements, name=f"geognn {loaded['model_name']}",
                          description=description)
