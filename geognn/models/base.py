"""What every energy model shares: graph building, readout, forces and stress.

A model subclasses `EnergyModel`, declares a config dataclass derived from
`EnergyModelConfig`, and implements `atomic_energies`. The base class turns
a PyG `Data`/`Batch` into a graph with the builder the model names
(``graph_builder``: a key of `geognn.graph.GRAPH_BUILDERS`), sums per-atom
energies (or takes the structure-level energy the model returns itself), and
differentiates for forces (-dE/dpos) and stress ((1/V) dE/dstrain) when the
model declares that its energy is a differentiable function of the positions
(``uses_positions``).
"""


import math
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, NamedTuple, Optional, Sequence

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch_geometric.utils import scatter

from geognn._checks import check_positions
from geognn._fields import from_dict
from geognn.data import keys
from geognn.graph import build_edges, check_backend_name, edge_attributes, edge_vectors, given_edges, lattice_offsets
from geognn.nn.mlp import lookup

READOUTS = ("sum", "mean")


@dataclass
class EnergyModelConfig:
    """Fields every model has.

    Attributes:
        cutoff: radius-graph cutoff in Å.
        max_atomic_number: the embedding covers elements 1..max_atomic_number.
        readout: "sum" (extensive targets such as energies) or "mean" (intensive).
        max_num_neighbors: None keeps every neighbour within the cutoff; an
            integer keeps the nearest ones and warns when any are dropped.
        neighbor_backend: the library that searches the graph's pairs: "auto" (the
            fastest installed one for the device), "vesin" or "torch-cluster"
            (`geognn.graph.neighbors`). Every backend gives the same graph.
    """

    cutoff: float = 5.0
    max_atomic_number: int = 100
    readout: str = "sum"
    max_num_neighbors: Optional[int] = None
    neighbor_backend: str = "auto"

    def __post_init__(self):
        # Each model's config extends this (calling super()) with the ranges of its own sizes and counts,
        # so a nonsensical option is refused here, naming it, not deep inside a layer's constructor.
        check_positive(self, "cutoff")
        check_at_least(self, 1, "max_atomic_number")
        if self.max_num_neighbors is not None:
            check_at_least(self, 1, "max_num_neighbors", why="or null for every neighbour")


def check_at_least(config, minimum: int, *names: str, why: str = "") -> None:
    """Refuse the first option of ``config`` in ``names`` below ``minimum`` (a size or count)."""
    for name in names:
        value = getattr(config, name)
        if not value >= minimum:
            note = f" ({why})" if why else ""
            raise ValueError(f"{type(config).__name__}.{name} = {value!r} is out of range: "
                             f"it must be an integer >= {minimum}{note}")


def check_positive(config, *names: str) -> None:
    """Refuse the first option of ``config`` in ``names`` that is not a number > 0 (NaN included)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} = {value!r} is out of range: it must be > 0")


def element_index(atomic_numbers: Optional[Sequence[int]], max_atomic_number: int) -> tuple[Tensor, int]:
    """A model's element table: ([max_atomic_number + 1] atomic number -> its row among the model's
    elements, -1 for the others; the number of elements). ``None`` takes every number 0..max_atomic_number."""
    known = list(range(max_atomic_number + 1)) if atomic_numbers is None else list(atomic_numbers)
    if len(set(known)) != len(known) or min(known) < 0 or max(known) > max_atomic_number:
        raise ValueError(f"atomic_numbers must be distinct elements 1..{max_atomic_number}, got {known}")
    index = torch.full((max_atomic_number + 1,), -1, dtype=torch.long)
    index[torch.tensor(known)] = torch.arange(len(known))
    return index, len(known)


def element_rows(index: Tensor, z: Tensor) -> Tensor:
    """`species_of` for TorchScript (an exported model, whose engine already checked the elements):
    the rows, with a plain error for an unknown element."""
    species = index[z]
    if bool((species < 0).any()):
        raise ValueError("an element is not among this model's atomic_numbers")
    return species


def species_of(index: Tensor, z: Tensor, atomic_numbers: Optional[Sequence[int]]) -> Tensor:
    """Rows of the element table (`element_index`) for atomic numbers ``z``; unknown elements raise."""
    species = index[z]
    if bool((species < 0).any()):
        unknown = sorted(set(z[species < 0].tolist()))
        raise ValueError(f"elements {unknown} are not among this model's atomic_numbers {atomic_numbers}")
    return species


class AtomGraph(NamedTuple):
    """A graph over the atoms of a batch, as handed to `EnergyModel.atomic_energies`.

    `EnergyModel.build_graph` always fills the geometry. For a model that does not use
    positions (``uses_positions = False``) it is computed from detached positions, so no
    gradient reaches the coordinates through it. A NamedTuple of tensors, so TorchScript
    compiles the models that take it (`geognn.export`).
    """

    edge_index: Tensor  # [2, E] (sender j, receiver i)
    edge_vec: Tensor  # [E, 3] pos[j] - pos[i] + edge_offset
    edge_len: Tensor  # [E]
    edge_offset: Optional[Tensor]  # [E, 3] lattice translation of the sender, None for molecules
    batch: Tensor  # [N]
    num_graphs: int
    edge_shift: Optional[Tensor] = None  # [E, 3] integer lattice image of the sender, None for molecules
    edge_attr: Optional[Tensor] = None  # [E, ...] what the graph builder attaches (bond graphs: bond order)


class EnergyModel(nn.Module):
    """Base class: ``model(data, compute_forces=False, compute_stress=False) -> dict``.

    The graph is built by the model's builder from the positions. To run the model on a graph
    of your choosing (synthetic tests such as `geognn.expressivity`'s star graphs), pass it
    explicitly: ``model(data, edge_index=edges)`` (and ``edge_shift=`` for periodic data). A
    graph stored in ``data`` (PyG's QM9 ships its bonds as ``data.edge_index``) is never used.

    Output keys (see `geognn.data.keys`): ``energy`` [B], ``node_energy`` [N],
    ``forces`` [N, 3] when asked, ``stress`` [B, 3, 3] when asked (periodic
    data only), and whatever else the model adds (EGNN: ``pos_updated``).

    Per-atom energies are ``raw * energy_scale + energy_shift +
    atomic_reference[z]``; those buffers default to the identity and are set
    from the training data by the training code. A model whose readout is
    structure-level (Set2Set) returns ``energy`` [B] from `atomic_energies`
    instead, and gets ``raw * energy_scale`` plus the sum (the mean, for a
    "mean" readout) of ``energy_shift + atomic_reference[z]`` over its atoms;
    its output has no ``node_energy``.

    Class attributes a model sets:
        graph_builder: the key of `geognn.graph.GRAPH_BUILDERS` that builds its
            graph ("radius" by default, "bonds" for the 2D baselines), called
            with `graph_options`.
        uses_positions: whether the energy is a differentiable function of the
            positions. A model that sees coordinates only through the bond
            graph sets it False, and asking it for forces or stress raises.
        size_extensive: whether the energy of structures far apart (beyond the
            graph's reach) is the sum of their energies. Models with a global
            readout or global attention (MPNN's Set2Set, GPS) set it False.
        depth_option: the config field that sets the number of message-passing
            steps (``num_layers``; SchNet ``num_interactions``, DimeNet ``num_blocks``).
        name: the model's key in `geognn.models.MODELS`; the registry sets it, so the
            names live in one place.
    """

    # The config dataclass is Python-side only; TorchScript (geognn.export) would try to compile its
    # generated __init__, whose source does not exist.
    __jit_ignored_attributes__ = ["config"]
    Config: ClassVar[type] = EnergyModelConfig
    graph_builder: ClassVar[str] = "radius"
    uses_positions: ClassVar[bool] = True
    size_extensive: ClassVar[bool] = True
    depth_option: ClassVar[str] = "num_layers"
    name: ClassVar[Optional[str]] = None  # the model's key in MODELS, set by the registry (geognn.models)

    def __init__(self, config: EnergyModelConfig):
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        lookup({name: name for name in READOUTS}, config.readout, "readout")
        check_backend_name(config.neighbor_backend)
        self.config = config
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("energy_shift", torch.tensor(0.0))
        self.register_buffer("atomic_reference", torch.zeros(config.max_atomic_number + 1))

    @classmethod
    def from_config(cls, config: EnergyModelConfig | Mapping[str, Any]) -> "EnergyModel":
        if isinstance(config, Mapping):
            # The recipes' checker: unknown options get the closest names, values their expected type.
            config = from_dict(cls.Config, dict(config), cls.__name__)
        return cls(config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.config).items())

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the model computes in (that of its output buffers and weights)."""
        return self.atomic_reference.dtype

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.atomic_reference.device

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        """Return at least ``{"node_energy": [N]}`` (before scale, shift and references)."""
        raise NotImplementedError

    def node_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> Tensor:
        """Per-atom energies [N] with scale, shift and element references, on a graph already made.

        `forward` adds the graph building, the checks and the derivatives; this is the part
        TorchScript compiles for `geognn.export` (models with a per-atom readout only).
        """
        out = self.atomic_energies(z, pos, graph)
        return out["node_energy"] * self.energy_scale + self.energy_shift + self.atomic_reference[z]

    def interaction_range(self) -> float:
        """How far (Å) an atom's energy sees: message-passing steps × cutoff.

        Moving an atom farther than this from atom i leaves i's energy unchanged, so engines that
        split a system over processes keep this much of the neighbouring domains as ghosts.
        Models whose messages live on edges reach one cutoff further (DimeNet overrides this).
        """
        return float(getattr(self.config, self.depth_option)) * float(self.config.cutoff)

    def atomic_types(self) -> list[int]:
        """The atomic numbers the model accepts: its ``atomic_numbers`` when its config has them,
        else every element of its embedding."""
        chosen = getattr(self.config, "atomic_numbers", None)
        return sorted(int(z) for z in chosen) if chosen is not None else list(range(1, self.config.max_atomic_number + 1))

    @torch.jit.unused
    def forward(
        self,
        data,
        compute_forces: bool = False,
        compute_stress: bool = False,
        *,
        edge_index: Optional[Tensor] = None,
        edge_shift: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        if (compute_forces or compute_stress) and not self.uses_positions:
            asked = "forces" if compute_forces else "stress"
            raise ValueError(
                f"{type(self).__name__} sees the positions only through its graph ({self.graph_builder!r}), so its "
                f"energy has no derivative in them and it cannot give {asked}; train and use it on energies only "
                "(loss.forces_weight and loss.stress_weight 0), or pick a model that uses positions"
            )
        z, pos = data[keys.ATOMIC_NUMBERS], data[keys.POSITIONS]
        self._check_input(z, pos)
        cell, pbc = data.get(keys.CELL), data.get(keys.PBC)
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros_like(z)
        num_graphs = cell.shape[0] if cell is not None else int(batch[-1]) + 1
        if compute_stress and cell is None:
            raise ValueError("stress needs a periodic structure (data with 'cell' and 'pbc')")

        with torch.set_grad_enabled(torch.is_grad_enabled() or compute_forces or compute_stress):
            if (compute_forces or compute_stress) and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            pos_in, cell_in, strain = pos, cell, None
            if compute_stress:
                # Differentiate through a symmetric strain applied to positions and cell.
                strain = torch.zeros_like(cell, requires_grad=True)
                symmetric = 0.5 * (strain + strain.transpose(-1, -2))
                pos_in = pos + torch.bmm(pos.unsqueeze(1), symmetric[batch]).squeeze(1)
                cell_in = cell + torch.bmm(cell, symmetric)
            graph = self.build_graph(pos_in, batch, num_graphs, cell_in, pbc, z=z,
                                     edge_index=edge_index, edge_shift=edge_shift)
            out = dict(self.atomic_energies(z, pos_in, graph))
            offset = self.energy_shift + self.atomic_reference[z]  # [N]
            reduce = self.config.readout
            if keys.NODE_ENERGY in out:  # the same as node_energies
                node_energy = out[keys.NODE_ENERGY] * self.energy_scale + offset
                out[keys.NODE_ENERGY] = node_energy
                out[keys.ENERGY] = scatter(node_energy, batch, dim=0, dim_size=num_graphs, reduce=reduce)
            elif keys.ENERGY in out:
                offset = scatter(offset, batch, dim=0, dim_size=num_graphs, reduce=reduce)
                out[keys.ENERGY] = out[keys.ENERGY] * self.energy_scale + offset
            else:
                raise TypeError(f"{type(self).__name__}.atomic_energies returned neither 'node_energy' nor 'energy'")

            if compute_forces or compute_stress:
                wrt = [pos] + ([strain] if compute_stress else [])
                grads = torch.autograd.grad(out[keys.ENERGY].sum(), wrt, create_graph=self.training)
                if compute_forces:
                    out[keys.FORCES] = -grads[0]
                if compute_stress:
                    # Structures without a cell volume (molecules batched with crystals get a zero
                    # cell) have no stress: NaN, which losses and errors leave out (geognn.data.labels).
                    volume = torch.linalg.det(cell).abs().view(-1, 1, 1)
                    has_volume = volume > 0
                    stress = grads[1] / torch.where(has_volume, volume, torch.ones_like(volume))
                    out[keys.STRESS] = torch.where(has_volume, stress, torch.full_like(stress, math.nan))
        return out

    def graph_options(self) -> dict[str, Any]:
        """Keyword options for this model's graph builder, taken from its config."""
        return {"cutoff": self.config.cutoff, "max_num_neighbors": self.config.max_num_neighbors,
                "backend": self.config.neighbor_backend}

    def build_graph(
        self,
        pos: Tensor,
        batch: Tensor,
        num_graphs: int,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        z: Tensor | None = None,
        edge_index: Tensor | None = None,
        edge_shift: Tensor | None = None,
    ) -> AtomGraph:
        """The model's graph with edge geometry (``z`` is needed by builders that look at elements).

        With ``edge_index`` (and ``edge_shift`` for periodic data) the given edges are used
        instead of the builder's search; they are checked, must lie within the model's cutoff
        (beyond it the envelope silences them), and get the builder's edge attributes.
        """
        if edge_index is None:
            if edge_shift is not None:
                raise ValueError("edge_shift was given without edge_index")
            edges = build_edges(self.graph_builder, z, pos, batch, cell, pbc, **self.graph_options())
        else:
            edges = given_edges(edge_index.to(pos.device), batch, edge_shift, periodic=cell is not None)
        if not self.uses_positions:
            pos, cell = pos.detach(), None if cell is None else cell.detach()
        edge_offset = None
        if edges.edge_shift is not None:
            edge_offset = lattice_offsets(edges.edge_index, edges.edge_shift, cell, batch)
        edge_vec, edge_len = edge_vectors(pos, edges.edge_index, edge_offset)
        edge_attr = edges.edge_attr
        if edge_index is not None:
            cutoff = self.graph_options().get("cutoff")
            if cutoff is not None and edge_len.numel() and float(edge_len.detach().max()) > cutoff:
                raise ValueError(
                    f"an explicitly given edge is {float(edge_len.detach().max()):.3f} Å long, beyond the model's cutoff "
                    f"{cutoff} Å, where its messages vanish; build the model with a larger cutoff"
                )
            edge_attr = edge_attributes(self.graph_builder, z, edges.edge_index, edge_len)
        return AtomGraph(edges.edge_index, edge_vec, edge_len, edge_offset, batch, num_graphs, edges.edge_shift, edge_attr)

    def _check_input(self, z: Tensor, pos: Tensor) -> None:
        check_positions(pos)
        dtype = self.dtype
        if pos.dtype != dtype:
            raise TypeError(
                f"positions are {pos.dtype} but the model is {dtype}; convert one of them "
                f"(model.to({pos.dtype}), or atoms_to_data(atoms, dtype={dtype}))"
            )
        if z.shape != pos.shape[:1]:
            raise ValueError(f"z must have shape [{pos.shape[0]}], got {list(z.shape)}")
        low, high = int(z.min()), int(z.max())
        limit = self.config.max_atomic_number
        if low < 1 or high > limit:
            bad = low if low < 1 else high
            name = chemical_symbols[bad] if 0 < bad < len(chemical_symbols) else str(bad)
            raise ValueError(
                f"element {name} (Z={bad}) is outside this model's embedding (Z = 1..{limit}); "
                f"build the model with max_atomic_number >= {bad}"
            )
