"""Geometric expressivity, made executable: which models can tell which structures apart.

Joshi et al. ("On the Expressive Power of Geometric Graph Neural Networks", ICML 2023) sort
geometric GNNs by what their messages can see. This module turns the synthetic tests of
that paper into measurements on geognn's own models:

- **Body order** (`two_body_pair`, `three_body_pair`, after Pozdnyakov et al., PRL 125,
  166001, 2020): two star-shaped environments around a centre atom whose multisets of
  k-body invariants (distances for k = 2; distances and angles at the centre for k = 3)
  are equal, though the environments differ. A model that only ever combines k-body
  invariants of one neighbourhood cannot separate them.
- **Chirality** (`chiral_pair`): an environment with four different neighbours and its
  mirror image. Every distance, angle and unsigned higher-order invariant agrees; only
  signed volumes (pseudoscalars) differ, so an E(3)-invariant model (all of geognn's)
  cannot separate them at any depth.
- **k-chains** (`k_chain_pair`): k atoms in a line with one bent atom at each end; the two
  structures differ only in whether the ends bend to the same side. No atom sees both ends
  within fewer than ``k // 2 + 1`` hops, so fewer message-passing steps cannot separate
  them; with enough steps equivariant models can, invariant ones cannot.
- **Rotational symmetry** (`symmetric_pair`): n atoms on a regular n-gon around a centre,
  in two orientations, read by a probe atom that receives the centre's messages. The
  centre's equivariant features of order l < n are the same for both orientations (an
  n-fold symmetric sum of spherical harmonics has no component 0 < |m| < n about the axis),
  so models whose features stop below l = n (Cartesian vectors are l = 1) cannot see the
  orientation; NequIP with ``l_max >= n`` can.

The measurement (`separation`): build the model at a given depth with random weights in
float64, evaluate the pooled scalar output (the energy) of both structures under several
random rotations and translations, and compare the gap between the two with the spread
under rotations (the float64 noise of the model's invariance). `run` does this for model
variants x depths x seeds; `ExpressivityTable.to_markdown` writes the table that
``geognn expressivity`` prints.

Every pair runs on an explicitly given graph (star graphs, chains), passed to the model as
``model(data, edge_index=...)``; the model's own radius or bond graph is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from geognn._fields import from_dict
from geognn.data import keys
from geognn.models import MODELS, EnergyModel
from geognn.nn.mlp import lookup

CARBON, HYDROGEN = 6, 1

# A pair counts as separated when the gap between its two pooled outputs exceeds NOISE_FACTOR
# times the noise: the outputs' spread under random rotations, and at least ROUNDING times
# their size (a few hundred float64 roundings; three rotations may happen to agree exactly).
NOISE_FACTOR = 100.0
ROUNDING = 64 * torch.finfo(torch.float64).eps


@dataclass(frozen=True)
class GeometricPair:
    """Two structures on the same graph that a model should tell apart.

    Attributes:
        name: short label, used as the table's column.
        family: "body order", "chirality", "chain" or "symmetry".
        z: [N] atomic numbers (the same for both structures).
        pos_a, pos_b: [N, 3] float64 positions, Å.
        edge_index: [2, E] the graph both structures are run on (sender, receiver).
        min_depth: fewer message-passing steps than this cannot separate the pair, for any
            model (no atom's receptive field contains what differs).
        description: one line on what differs.
    """

    name: str
    family: str
    z: Tensor
    pos_a: Tensor
    pos_b: Tensor
    edge_index: Tensor
    min_depth: int = 1
    description: str = ""


def star_edges(num_neighbours: int) -> Tensor:
    """Both directions between atom 0 (the centre) and atoms 1..num_neighbours, [2, 2 n]."""
    leaves = torch.arange(1, num_neighbours + 1)
    centre = torch.zeros_like(leaves)
    return torch.stack([torch.cat([leaves, centre]), torch.cat([centre, leaves])])


def path_edges(num_atoms: int) -> Tensor:
    """Both directions along the path 0 - 1 - ... - (num_atoms - 1), [2, 2 (num_atoms - 1)]."""
    left, right = torch.arange(num_atoms - 1), torch.arange(1, num_atoms)
    return torch.stack([torch.cat([left, right]), torch.cat([right, left])])


def _star_pair(name: str, family: str, neighbours_a, neighbours_b, description: str) -> GeometricPair:
    centre = [[0.0, 0.0, 0.0]]
    pos_a = torch.tensor(centre + list(neighbours_a), dtype=torch.float64)
    pos_b = torch.tensor(centre + list(neighbours_b), dtype=torch.float64)
    z = torch.full((pos_a.shape[0],), CARBON, dtype=torch.long)
    return GeometricPair(name, family, z, pos_a, pos_b, star_edges(pos_a.shape[0] - 1), 1, description)


def two_body_pair() -> GeometricPair:
    """Two neighbours at 1.5 Å from the centre, at 90° (a) or 180° (b) to each other.

    The star graph's only distances are centre-neighbour ones, all 1.5 Å in both: a model
    that sees distances alone (SchNet, EGNN without coordinate updates) gives both the same
    output at any depth. The angle at the centre tells them apart.
    """
    r = 1.5
    return _star_pair("2-body", "body order", [[r, 0, 0], [0, r, 0]], [[r, 0, 0], [-r, 0, 0]],
                      "equal distances to the centre, angle 90° vs 180°")


def three_body_pair() -> GeometricPair:
    """Four neighbours whose distances and pairwise angles at the centre agree as multisets.

    The construction of Pozdnyakov et al. (2020, fig. 1b): three fixed neighbours
    a = (1, 0, 1), b = (1, 1, 1), b' = (-1, -1, 1) and a fourth at c = (0, ±1, 1). The dot
    products of c with (a, b, b') are (1, 2, 0) in one and (1, 0, 2) in the other, and
    |b| = |b'|, so every (distance, distance, angle) triple at the centre occurs equally
    often. The environments are not congruent (the 4-body invariants differ).
    """
    fixed = [[1.0, 0, 1], [1, 1, 1], [-1, -1, 1]]
    return _star_pair("3-body", "body order", fixed + [[0, 1, 1]], fixed + [[0, -1, 1]],
                      "equal distances and angles at the centre (Pozdnyakov et al. 2020)")


def four_body_pair() -> GeometricPair:
    """Seven neighbours whose triples (with the centre: 4-body) agree as multisets, up to reflection.

    Six fixed neighbours, four cube corners (±1, ±1, ±1) and three octahedron vertices at
    1.3 Å along the axes, plus a seventh at (0, 0, -1.3) or (0, 0, +1.3). For every triple
    of neighbours r_i, r_j, r_k the Gram matrix (three lengths, three angles at the centre)
    occurs equally often in both, so 2-, 3- and unsigned 4-body invariants all agree; the
    signed volumes det(r_i, r_j, r_k) and the 5-body invariants differ, and the two are not
    congruent. We found it by exhaustive search over 7-atom subsets of a cube plus an
    octahedron (the 4-body counterexamples of Pozdnyakov et al. 2020 follow the same idea:
    one atom placed at one of two positions around a fixed set).
    """
    fixed = [[-1.0, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, -1, 1], [-1.3, 0, 0], [1.3, 0, 0]]
    return _star_pair("4-body", "body order", fixed + [[0, 0, -1.3]], fixed + [[0, 0, 1.3]],
                      "equal distances, angles and unsigned triple invariants at the centre; signed volumes differ")


def chiral_pair() -> GeometricPair:
    """A centre with four neighbours at different distances, and its mirror image (x -> -x).

    Every distance, angle and unsigned invariant of any order agrees between mirror images;
    only signed volumes differ. A model whose output is invariant under reflections (every
    E(3)-invariant model, which all of geognn's are) cannot separate them at any depth.
    """
    directions = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3.0)
    lengths = torch.tensor([1.0, 1.2, 1.4, 1.6]).unsqueeze(-1)
    neighbours = (directions * lengths).tolist()
    mirrored = [[-x, y, z] for x, y, z in neighbours]
    return _star_pair("chiral", "chirality", neighbours, mirrored, "an environment and its mirror image")


def k_chain_pair(k: int) -> GeometricPair:
    """k atoms 1.5 Å apart in a line, one more atom bent off each end: ends cis (a) or trans (b).

    After Joshi et al. (2023, sec. 5): all bond lengths and angles agree, only the relative
    side of the two end atoms differs, which is visible to an atom only when both ends are
    within its receptive field: ``k // 2 + 1`` message-passing steps at least.
    """
    if k < 2:
        raise ValueError(f"a k-chain needs k >= 2, got {k}")
    spacing, bend = 1.5, (1.2, 0.9)  # the bent atoms sit 1.5 Å from the chain's ends
    line = [[0.0, spacing * i, 0.0] for i in range(k)]
    end = [bend[0], spacing * (k - 1) + bend[1], 0.0]
    pos_a = torch.tensor([[bend[0], -bend[1], 0.0]] + line + [end], dtype=torch.float64)
    pos_b = torch.tensor([[-bend[0], -bend[1], 0.0]] + line + [end], dtype=torch.float64)
    pos_a, pos_b = pos_a - pos_a.mean(0), pos_b - pos_b.mean(0)
    z = torch.full((k + 2,), CARBON, dtype=torch.long)
    return GeometricPair(f"{k}-chain", "chain", z, pos_a, pos_b, path_edges(k + 2), k // 2 + 1,
                         f"{k} atoms in a line, ends bent to the same side or opposite sides")


def symmetric_pair(n: int) -> GeometricPair:
    """A regular n-gon of neighbours (radius 1.5 Å) around a centre in two orientations, and a probe.

    The second orientation is the first turned by a quarter of the n-gon's period about its
    axis. A probe atom (hydrogen, off the plane) receives the centre's messages and sends
    none, so the centre's features are those of the symmetric environment and the probe's
    output reads them along its own direction. By symmetry the centre's features of order
    0 < l < n are equal in both orientations; features of order l >= n are not.
    """
    if n < 2:
        raise ValueError(f"a rotationally symmetric environment needs n >= 2, got {n}")
    period = 2 * math.pi / n

    def ring(offset: float) -> list:
        angles = [offset + period * i for i in range(n)]
        return [[1.5 * math.cos(a), 1.5 * math.sin(a), 0.0] for a in angles]

    probe = [1.3 * math.cos(0.3 * period), 1.3 * math.sin(0.3 * period), 0.6]
    pos_a = torch.tensor([[0.0, 0.0, 0.0]] + ring(0.0) + [probe], dtype=torch.float64)
    pos_b = torch.tensor([[0.0, 0.0, 0.0]] + ring(0.25 * period) + [probe], dtype=torch.float64)
    z = torch.tensor([CARBON] * (n + 1) + [HYDROGEN])
    to_probe = torch.tensor([[0], [n + 1]])  # centre -> probe only
    edge_index = torch.cat([star_edges(n), to_probe], dim=1)
    return GeometricPair(f"{n}-fold", "symmetry", z, pos_a, pos_b, edge_index, 2,
                         f"{n}-fold symmetric neighbours in two orientations, read by a probe atom")


def default_pairs() -> list[GeometricPair]:
    """The suite `run` uses by default: body order 2-4, chirality, k-chains 2-4, n-fold symmetry 2-4."""
    return [two_body_pair(), three_body_pair(), four_body_pair(), chiral_pair(), *(k_chain_pair(k) for k in (2, 3, 4)),
            *(symmetric_pair(n) for n in (2, 3, 4))]


@dataclass(frozen=True)
class Variant:
    """A model of `MODELS` with options, under a table label."""

    label: str
    name: str
    options: Mapping = field(default_factory=dict)


def default_variants() -> list[Variant]:
    """Every model in `MODELS` with its defaults, plus EGNN without coordinate updates,
    NequIP at l_max 1, 2 and 3 and MACE at correlation 1, 2 and 3 (one-hot over the two
    elements the pairs use)."""
    variants = []
    for name in MODELS:
        if name == "egnn":
            variants += [Variant("egnn", name), Variant("egnn (no coord. updates)", name, {"update_coords": False})]
        elif name == "nequip":
            variants += [Variant(f"nequip l_max={l}", name, {"l_max": l, "atomic_numbers": (HYDROGEN, CARBON)})
                         for l in (1, 2, 3)]
        elif name == "mace":
            variants += [Variant(f"mace correlation={nu}", name, {"correlation": nu, "atomic_numbers": (HYDROGEN, CARBON)})
                         for nu in (1, 2, 3)]
        else:
            variants.append(Variant(name, name))
    return variants


def random_model(name: str, depth: int, seed: int, **options) -> EnergyModel:
    """``MODELS[name]`` with ``depth`` message-passing steps and random weights, float64, eval mode.

    Weight matrices a model initialises to zero (DimeNet's output layers start at zero, so
    its untrained output is constant) are redrawn from N(0, 1/fan_in): a separation test
    asks about a generic point in weight space, and the zero start is a special one.
    """
    cls = lookup(MODELS, name, "model")
    torch.manual_seed(seed)
    model = cls.from_config({**options, cls.depth_option: depth}).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2 and not bool(parameter.any()):
                parameter.normal_(0.0, parameter.shape[1] ** -0.5)
    return model


def random_rotation(generator: torch.Generator) -> Tensor:
    """A uniformly random proper rotation [3, 3] float64 (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@dataclass(frozen=True)
class Separation:
    """One model, one pair: the gap between the two outputs and the noise it is measured against."""

    gap: float  # |median E(a) - median E(b)| over rotations
    noise: float  # largest spread of E(a) or E(b) over rotations
    scale: float  # largest |E|

    @property
    def separated(self) -> bool:
        return self.gap > NOISE_FACTOR * max(self.noise, ROUNDING * self.scale)

    @property
    def relative_gap(self) -> float:
        return self.gap / self.scale if self.scale > 0 else 0.0


def pair_outputs(model: EnergyModel, pair: GeometricPair, num_rotations: int, generator: torch.Generator) -> Tensor:
    """Pooled outputs [2, num_rotations] of both structures under random rotations and translations."""
    structures = []
    for pos in (pair.pos_a, pair.pos_b):
        for _ in range(num_rotations):
            rotation = random_rotation(generator)
            shift = torch.randn(3, generator=generator, dtype=torch.float64)
            structures.append(Data(z=pair.z, pos=pos @ rotation.T + shift))
    batch = Batch.from_data_list(structures)
    num_atoms = pair.z.shape[0]
    edge_index = torch.cat([pair.edge_index + num_atoms * i for i in range(len(structures))], dim=1)
    with torch.no_grad():
        energy = model(batch, edge_index=edge_index)[keys.ENERGY]
    return energy.view(2, num_rotations)


def separation(model: EnergyModel, pair: GeometricPair, num_rotations: int = 3,
               generator: Optional[torch.Generator] = None) -> Separation:
    """How far apart ``model`` puts the two structures of ``pair``, against its rotation noise."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    energy = pair_outputs(model, pair, num_rotations, generator)
    gap = float((energy[0].median() - energy[1].median()).abs())
    noise = float((energy.max(dim=1).values - energy.min(dim=1).values).max())
    return Separation(gap, noise, float(energy.abs().max()))


@dataclass
class ExpressivityTable:
    """Separations of every (variant, pair, depth), one per seed."""

    variants: list[Variant]
    pairs: list[GeometricPair]
    depths: list[int]
    seeds: list[int]
    results: dict = field(default_factory=dict)  # (label, pair name, depth) -> [Separation per seed]

    def fraction(self, label: str, pair: str, depth: int) -> float:
        """Share of seeds at which the pair was separated."""
        found = self.results[label, pair, depth]
        return sum(s.separated for s in found) / len(found)

    def separated_depths(self, label: str, pair: str) -> list[int]:
        """Depths at which every seed separated the pair."""
        return [d for d in self.depths if self.fraction(label, pair, d) == 1.0]

    def cell(self, label: str, pair: str) -> str:
        parts = []
        for depth in self.depths:
            share = self.fraction(label, pair, depth)
            if share == 1.0:
                parts.append(str(depth))
            elif share > 0:
                parts.append(f"{depth}({share:.0%})")
        return _compress(parts) if parts else "—"

    def to_markdown(self) -> str:
        header = ["model"] + [pair.name for pair in self.pairs]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for variant in self.variants:
            lines.append("| " + " | ".join([variant.label] + [self.cell(variant.label, p.name) for p in self.pairs]) + " |")
        return "\n".join(lines)

    def legend(self) -> str:
        depths = f"{self.depths[0]}-{self.depths[-1]}" if len(self.depths) > 1 else str(self.depths[0])
        return (f"Each cell lists the depths (message-passing steps, of {depths} tried) at which the model "
                f"separated the pair at random weights for all {len(self.seeds)} seeds; a percentage marks a depth "
                "where only some seeds did, — none. Separated: the gap between the pooled outputs exceeds "
                f"{NOISE_FACTOR:g}x the float64 noise (their spread under random rotations, at least "
                f"{ROUNDING:.1e} of their size).")


def _compress(parts: list[str]) -> str:
    """'1', '2', '3', '4' -> '1-4'; leaves anything with percentages as a list."""
    if all(p.isdigit() for p in parts):
        numbers = [int(p) for p in parts]
        if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
            return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(parts)


def run(variants: Optional[Sequence[Variant]] = None, pairs: Optional[Sequence[GeometricPair]] = None,
        depths: Iterable[int] = (1, 2, 3, 4), seeds: Iterable[int] = (0, 1, 2), num_rotations: int = 3,
        progress: Optional[Callable[[str], None]] = None) -> ExpressivityTable:
    """Measure every variant at every depth and seed on every pair (defaults: the whole suite)."""
    table = ExpressivityTable(list(variants or default_variants()), list(pairs or default_pairs()),
                              sorted(set(depths)), list(seeds))
    if not table.depths or min(table.depths) < 1:
        raise ValueError(f"depths must be positive integers, got {table.depths}")
    if not table.seeds:
        raise ValueError("give at least one seed")
    for variant in table.variants:
        for depth in table.depths:
            per_seed = {pair.name: [] for pair in table.pairs}
            for seed in table.seeds:
                model = random_model(variant.name, depth, seed, **variant.options)
                generator = torch.Generator().manual_seed(seed)
                for pair in table.pairs:
                    per_seed[pair.name].append(separation(model, pair, num_rotations, generator))
            for name, found in per_seed.items():
                table.results[variant.label, name, depth] = found
            if progress is not None:
                progress(f"{variant.label} depth {depth}")
    return table


def parse_pair(text: str) -> GeometricPair:
    """A pair by name: "2-body", "3-body", "4-body", "chiral", "K-chain" (K >= 2) or "N-fold" (N >= 2)."""
    fixed = {"2-body": two_body_pair, "3-body": three_body_pair, "4-body": four_body_pair, "chiral": chiral_pair}
    if text in fixed:
        return fixed[text]()
    number, _, kind = text.partition("-")
    makers = {"chain": k_chain_pair, "fold": symmetric_pair}
    if kind in makers and number.isdigit():
        return makers[kind](int(number))
    raise ValueError(f"unknown pair {text!r}; choose 2-body, 3-body, chiral, K-chain (e.g. 4-chain) or N-fold (e.g. 3-fold)")


def report(table: ExpressivityTable) -> str:
    """The table as a markdown document: what was run, the table, its legend and the pairs."""
    lines = ["# Geometric expressivity of geognn's models", "",
             f"Depths {', '.join(map(str, table.depths))}; seeds {', '.join(map(str, table.seeds))}; "
             "random weights, float64, pooled scalar output (the energy).", "",
             table.to_markdown(), "", table.legend(), "", "Pairs:", ""]
    lines += [f"- **{pair.name}** ({pair.family}): {pair.description}" for pair in table.pairs]
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> Variant:
    """``name`` or ``name:option=value,option=value`` (values as YAML scalars) -> `Variant`."""
    import yaml

    name, _, rest = text.partition(":")
    lookup(MODELS, name, "model")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"model option {item!r} in {text!r} must be key=value")
        options[key.strip()] = yaml.safe_load(value)
    if MODELS[name].depth_option in options:
        raise ValueError(f"{MODELS[name].depth_option} of {name} is the depth, set by the depths tried, not an option")
    from_dict(MODELS[name].Config, options, name)  # the model options' own checker: names and types
    return Variant(text, name, options)


__all__ = ["GeometricPair", "Variant", "Separation", "ExpressivityTable", "two_body_pair", "three_body_pair",
           "four_body_pair", "chiral_pair", "k_chain_pair", "symmetric_pair", "default_pairs", "default_variants", "random_model",
           "separation", "pair_outputs", "run", "parse_variant", "parse_pair", "report", "star_edges", "path_edges"]
