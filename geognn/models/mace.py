"""MACE (Batatia et al., NeurIPS 2022): higher-body-order messages by a symmetric contraction.

species one-hot -> linear to c scalars -> num_interactions x (MACEInteraction ->
MACEProductBlock) -> per-layer readouts summed -> per-atom energy. As in
mace-torch's ``ScaleShiftMACE`` with its default blocks
(RealAgnosticResidualInteractionBlock, silu): every layer but the last carries
``hidden_irreps``, the last only its scalars; every layer's features are read
out by a linear map to one scalar, the last one's by a small MLP
(``MLP_irreps`` hidden scalars, normalised silu). Scale, shift and the
per-element energies E0 are the `EnergyModel` base's ``energy_scale``,
``energy_shift`` and ``atomic_reference``.

The option names are mace-torch's where they mean the same (``cutoff`` is its
``r_max``), so a mace-torch recipe's values carry over. `MACE.from_mace` turns a
mace-torch model's state dict into this model (tested equal in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch
from e3nn import o3
from torch import Tensor, nn

from geognn.data import keys
from geognn.models.base import (AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive,
                                element_index, element_rows, species_of)
from geognn.nn import SphericalEdgeEmbedding
from geognn.nn.mace import MACEInteraction, MACEProductBlock, MACEReadout


def _irreps_option(config, name: str) -> o3.Irreps:
    try:
        return o3.Irreps(getattr(config, name))
    except (ValueError, AssertionError, TypeError):
        raise ValueError(f"{type(config).__name__}.{name} = {getattr(config, name)!r} is not an irreps string "
                         "such as '32x0e + 32x1o'") from None


@dataclass
class MACEConfig(EnergyModelConfig):
    """MACE hyperparameters (mace-torch's names; defaults: a small CPU model).

    Attributes:
        hidden_irreps: the features between layers, ``"c x 0e + c x 1o + ..."``:
            every irrep with the same multiplicity c (the channels), 0e first
            (mace-torch's paper model: "128x0e + 128x1o").
        max_ell: highest l of the edge spherical harmonics (0-3).
        correlation: the symmetric contraction's degree ν (body order ν + 1),
            1-4; one value, or one per layer.
        num_interactions: layers (message passing steps).
        num_bessel: Bessel functions of the edge length.
        num_polynomial_cutoff: p of the polynomial cutoff envelope.
        radial_MLP: hidden sizes of the radial MLP giving each edge its path weights.
        MLP_irreps: hidden scalars of the last layer's readout MLP.
        avg_num_neighbors: neighbour sums are divided by this (set from the data; "auto" in recipes).
        atomic_numbers: the elements the model knows (the per-element weights
            of the contraction have one row each); None takes 0..max_atomic_number.
    """

    hidden_irreps: str = "32x0e + 32x1o"
    max_ell: int = 3
    correlation: Union[int, tuple] = 3
    num_interactions: int = 2
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    radial_MLP: tuple = (64, 64, 64)
    MLP_irreps: str = "16x0e"
    avg_num_neighbors: float = 1.0
    atomic_numbers: Optional[tuple] = None

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "num_interactions", "num_bessel", "num_polynomial_cutoff")
        if not 0 <= self.max_ell <= 3:
            raise ValueError(f"{type(self).__name__}.max_ell = {self.max_ell!r} is out of range: it must be 0, 1, 2 or 3")
        correlations = self.correlations()
        if len(correlations) != self.num_interactions or not all(c in (1, 2, 3, 4) for c in correlations):
            raise ValueError(f"{type(self).__name__}.correlation = {self.correlation!r} is out of range: one value "
                             f"1-4, or one per layer ({self.num_interactions})")
        if not all(isinstance(width, int) and width >= 1 for width in self.radial_MLP):
            raise ValueError(f"{type(self).__name__}.radial_MLP = {self.radial_MLP!r} is out of range: "
                             "its hidden sizes must be integers >= 1")
        hidden = _irreps_option(self, "hidden_irreps")
        if (len(hidden) == 0 or hidden[0].ir != o3.Irrep("0e") or len({mul for mul, _ in hidden}) != 1
                or len({ir for _, ir in hidden}) != len(hidden) or o3.Irrep("0o") in [ir for _, ir in hidden]):
            raise ValueError(f"{type(self).__name__}.hidden_irreps = {self.hidden_irreps!r}: expected 'c x 0e' first, "
                             "every irrep once with the same multiplicity c, no 0o (e.g. '32x0e + 32x1o')")
        mlp = _irreps_option(self, "MLP_irreps")
        if len(mlp) == 0 or any(ir != o3.Irrep("0e") for _, ir in mlp):
            raise ValueError(f"{type(self).__name__}.MLP_irreps = {self.MLP_irreps!r}: expected scalars, e.g. '16x0e'")
        check_positive(self, "avg_num_neighbors")

    def correlations(self) -> tuple[int, ...]:
        """The correlation of each layer."""
        if isinstance(self.correlation, int):
            return (self.correlation,) * self.num_interactions
        return tuple(self.correlation)


class MACE(EnergyModel):
    """MACE on geognn's path; ``build_model("mace", hidden_irreps="64x0e + 64x1o", correlation=3, ...)``."""

    Config = MACEConfig
    depth_option = "num_interactions"

    def __init__(self, config: MACEConfig):
        super().__init__(config)
        species, self._num_elements = element_index(config.atomic_numbers, config.max_atomic_number)
        self.register_buffer("species_index", species)  # atomic number -> one-hot position, -1 unknown
        hidden = o3.Irreps(config.hidden_irreps)
        channels = hidden[0].mul
        scalars = o3.Irreps(f"{channels}x0e")
        self.embedding = o3.Linear(o3.Irreps(f"{self._num_elements}x0e"), scalars)
        self.edge_embedding = SphericalEdgeEmbedding(config.max_ell, config.num_bessel, config.cutoff,
                                                     config.num_polynomial_cutoff, trainable_radial=False)
        sh = self.edge_embedding.irreps_sh
        a_irreps = o3.Irreps([(channels, ir) for _, ir in sh]).sort().irreps.simplify()
        self.interactions, self.products, self.readouts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        irreps = scalars
        for layer, correlation in enumerate(config.correlations()):
            last = layer == config.num_interactions - 1
            out = scalars if last else hidden
            self.interactions.append(MACEInteraction(
                irreps, a_irreps, sh, self._num_elements, out, num_radial=config.num_bessel,
                radial_mlp=tuple(config.radial_MLP), avg_num_neighbors=config.avg_num_neighbors))
            self.products.append(MACEProductBlock(a_irreps, out, correlation, self._num_elements))
            self.readouts.append(MACEReadout(out, config.MLP_irreps if last and config.num_interactions > 1 else None))
            irreps = out

    def reset_parameters(self) -> None:
        for module in (*self.interactions, *self.products, *self.readouts):
            module.reset_parameters()
        self.embedding.weight.data.normal_()

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        if torch.jit.is_scripting():  # exported: the engine was told the model's elements (see geognn.export)
            species = element_rows(self.species_index, z)
        else:
            species = species_of(self.species_index, z, self.config.atomic_numbers)
        one_hot = torch.nn.functional.one_hot(species, self._num_elements).to(pos.dtype)  # [N, S]
        x = self.embedding(one_hot)
        edge_sh, edge_radial = self.edge_embedding(graph.edge_vec)
        energy = pos.new_zeros(z.shape[0])
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            a, sc = interaction(x, one_hot, graph.edge_index, edge_sh, edge_radial)
            x = product(a, species, sc)
            energy = energy + readout(x)
        return {keys.NODE_ENERGY: energy}

    @classmethod
    def from_mace(cls, state_dict: Mapping[str, Tensor], hyperparameters: Mapping[str, Any],
                  **options) -> "MACE":
        """A geognn MACE equal to a mace-torch ``ScaleShiftMACE`` (its default blocks), from its weights.

        Args:
            state_dict: the mace-torch model's ``state_dict()`` (the ``U_matrix``
                buffers may be left out: geognn computes its own).
            hyperparameters: mace-torch's constructor values: ``r_max``,
                ``num_bessel``, ``num_polynomial_cutoff``, ``max_ell``,
                ``num_interactions``, ``hidden_irreps``, ``MLP_irreps``,
                ``correlation``, ``radial_MLP``, ``avg_num_neighbors``,
                ``atomic_numbers`` (the scale, shift and E0 are read from the state dict).
            options: further `MACEConfig` fields (``max_atomic_number``, ``neighbor_backend``, ...).

        What changes on the way (`convert_mace_state`): e3nn 0.4.4 and 0.6
        differ in the sign of some Wigner 3j symbols (`e3nn_044_sign`), so the weights of every
        path through such a symbol change sign (interaction, skip connection,
        product basis); the radial MLP's e3nn normalisation (weights divided by
        √fan-in, silu times its second-moment constant) is folded into plain
        linear layers; mace-torch sorts the paths of its interaction's tensor
        product by output block, geognn keeps them in the order they are made,
        so the radial MLP's output columns are reordered. Everything else is
        copied. (mace-torch's edge vectors point from sender to receiver,
        geognn's the other way, so inside the model the odd-l features of
        the two have opposite signs; every scalar, and so the energy, forces
        and stress, agree.)
        """
        config = MACEConfig(
            cutoff=float(hyperparameters["r_max"]), hidden_irreps=str(o3.Irreps(hyperparameters["hidden_irreps"])),
            max_ell=int(hyperparameters["max_ell"]), correlation=_as_correlation(hyperparameters["correlation"]),
            num_interactions=int(hyperparameters["num_interactions"]), num_bessel=int(hyperparameters["num_bessel"]),
            num_polynomial_cutoff=int(hyperparameters["num_polynomial_cutoff"]),
            radial_MLP=tuple(int(w) for w in hyperparameters.get("radial_MLP") or (64, 64, 64)),
            MLP_irreps=str(o3.Irreps(hyperparameters.get("MLP_irreps", "16x0e"))),
            avg_num_neighbors=float(hyperparameters["avg_num_neighbors"]),
            atomic_numbers=tuple(int(z) for z in hyperparameters["atomic_numbers"]), **options)
        dtype = next(v.dtype for v in state_dict.values() if v.dtype.is_floating_point)
        model = cls(config).to(dtype)
        model.load_state_dict(convert_mace_state(model, state_dict), strict=True)
        return model


def _as_correlation(value) -> Union[int, tuple]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return int(value)


# The Wigner 3j symbols whose sign differs between e3nn 0.4.4 (mace-torch's) and 0.6, as sorted (l1, l2, l3)
# in hex digits; the difference is symmetric under permutations. Every l <= 11, all that e3nn 0.4.4 has, read
# off both versions (benchmarks/mace_reference.py saves 0.4.4's; tests/models/test_mace.py checks every triple).
_E3NN_044_FLIPPED = frozenset(tuple(int(digit, 16) for digit in triple) for triple in (
    "122 133 144 155 166 177 188 199 1aa 1bb 346 357 368 379 38a 39b 445 456 467 478 489 49a 4ab 555 566 56a "
    "577 57b 588 599 5aa 5bb 669 67a 68b 779 78a 79b 889 89a 8ab 999 9aa 9bb").split())


def e3nn_044_sign(l1: int, l2: int, l3: int) -> float:
    """±1: e3nn 0.4.4's ``wigner_3j(l1, l2, l3)`` divided by e3nn 0.6's (both real and normalised, so ±1).

    e3nn 0.4.4 read its symbols from a table it shipped (l <= 11); 0.5 and later
    compute them from the complex Clebsch-Gordan coefficients, which gives the
    opposite sign for 44 families of (l1, l2, l3), e.g. (1, l, l) for l >= 2.
    """
    if max(l1, l2, l3) > 11:
        raise ValueError(f"e3nn 0.4.4 has no Wigner 3j symbol for l > 11, got ({l1}, {l2}, {l3})")
    return -1.0 if tuple(sorted((l1, l2, l3))) in _E3NN_044_FLIPPED else 1.0


def convert_mace_state(model: MACE, mace_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A mace-torch ``ScaleShiftMACE`` state dict as ``model``'s (built with the same hyperparameters)."""
    from e3nn.math import normalize2mom

    state = {key: value.clone() for key, value in model.state_dict().items()}
    used = set()

    def take(key: str) -> Tensor:
        if key not in mace_state:
            raise ValueError(f"the mace-torch state dict has no {key!r}: from_mace converts ScaleShiftMACE models "
                             "with the default RealAgnosticResidualInteractionBlock and NonLinearReadoutBlock")
        used.add(key)
        return mace_state[key].detach().to(torch.float64)

    def put(key: str, value: Tensor) -> None:
        if state[key].shape != value.shape:
            raise ValueError(f"{key}: mace-torch gives shape {list(value.shape)}, the model has "
                             f"{list(state[key].shape)}; are the hyperparameters those of the mace-torch model?")
        state[key] = value.to(state[key].dtype)

    gain = float(normalize2mom(torch.nn.functional.silu).cst)  # e3nn's silu constant (FullyConnectedNet)
    put("embedding.weight", take("node_embedding.linear.weight"))
    put("edge_embedding.bessel.frequencies",
        take("radial_embedding.bessel_fn.bessel_weights") * model.config.cutoff)
    for i, (interaction, product) in enumerate(zip(model.interactions, model.products)):
        block = f"interactions.{i}."  # the same prefix in both models
        conv = interaction.conv
        put(block + "conv.linear_1.weight", take(block + "linear_up.weight"))
        put(block + "conv.linear_2.weight", take(block + "linear.weight"))
        linears = [k for k, layer in enumerate(conv.radial) if isinstance(layer, nn.Linear)]
        for n, k in enumerate(linears):
            weight = take(block + f"conv_tp_weights.layer{n}.weight")  # [fan_in, fan_out], used as x @ w / √fan_in
            weight = weight / math.sqrt(weight.shape[0]) * (gain if n > 0 else 1.0)
            if n == len(linears) - 1:  # one column block per path: mace-torch's order, then its 3j signs
                reference = conv.tp.reference(torch.float64)
                weight = weight[:, _mace_path_order(reference)] * _path_signs(reference).unsqueeze(0)
            put(block + f"conv.radial.{k}.weight", weight.T)
        put(block + "skip.weight", take(block + "skip_tp.weight") * _path_signs(interaction.skip))
        contraction = product.contraction
        prefix = f"products.{i}.symmetric_contractions.contractions."
        for k, per_degree in enumerate(contraction.path_triples):
            for degree, paths in enumerate(per_degree, start=1):
                name = ("weights_max" if degree == contraction.correlation
                        else f"weights.{contraction.correlation - 1 - degree}")
                signs = torch.tensor([math.prod(e3nn_044_sign(*t) for t in triples) for triples in paths],
                                     dtype=torch.float64)
                put(f"products.{i}.contraction.weights.{k}.{degree - 1}", take(prefix + f"{k}.{name}")
                    * signs.view(1, -1, 1))
        put(f"products.{i}.linear.weight", take(f"products.{i}.linear.weight"))
    for i, readout in enumerate(model.readouts):
        names = ("linear",) if hasattr(readout, "linear") else ("linear_1", "linear_2")
        for name in names:
            put(f"readouts.{i}.{name}.weight", take(f"readouts.{i}.{name}.weight"))
    put("energy_scale", take("scale_shift.scale").reshape(()))
    put("energy_shift", take("scale_shift.shift").reshape(()))
    e0 = take("atomic_energies_fn.atomic_energies").reshape(-1)
    elements = model.config.atomic_numbers
    if e0.numel() != len(elements):
        raise ValueError(f"atomic_energies has {e0.numel()} values for {len(elements)} elements: "
                         "multi-head mace-torch models are not supported")
    reference = state["atomic_reference"].clone()
    reference[torch.tensor(elements)] = e0.to(reference.dtype)
    state["atomic_reference"] = reference
    # Buffers geognn recomputes or keeps itself; anything else would be a block this conversion does not know.
    ignored = ("U_matrix", "_zeroed", "r_max", "atomic_numbers", "num_interactions", "cutoff_fn.",
               "bessel_fn.prefactor", "bessel_fn.r_max", "spherical_harmonics.", "output_mask",
               "._compiled_main")  # e3nn's generated code keeps its Wigner 3j constants as buffers
    left = [key for key, value in mace_state.items() if key not in used and not any(part in key for part in ignored)
            and not (value.numel() == 0 and key.endswith((".bias", ".weight")))]  # e3nn 0.4's empty biases
    if left:
        raise ValueError(f"from_mace does not know these mace-torch weights: {left[:5]}"
                         + (f" and {len(left) - 5} more" if len(left) > 5 else ""))
    return state


def _mace_path_order(tp) -> Tensor:
    """Columns of mace-torch's per-edge weights in ``tp``'s order: mace-torch sorts its uvu instructions
    by output block (``tp_out_irreps_with_instructions``), geognn keeps them in the order they are made."""
    sizes = [math.prod(ins.path_shape) for ins in tp.instructions]
    theirs = sorted(range(len(sizes)), key=lambda p: tp.instructions[p].i_out)  # stable, as Python's sort
    start, offset = {}, 0
    for p in theirs:
        start[p], offset = offset, offset + sizes[p]
    return torch.cat([torch.arange(start[p], start[p] + sizes[p]) for p in range(len(sizes))])


def _path_signs(tp) -> Tensor:
    """Per weight of an e3nn tensor product: the 0.4.4 / 0.6 sign of its path's Wigner 3j symbol."""
    signs = []
    for ins in tp.instructions:
        if not ins.has_weight:
            continue
        l1, l2 = tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l
        sign = e3nn_044_sign(l1, l2, tp.irreps_out[ins.i_out].ir.l)
        signs.append(torch.full((math.prod(ins.path_shape),), sign, dtype=torch.float64))
    return torch.cat(signs) if signs else torch.zeros(0, dtype=torch.float64)
