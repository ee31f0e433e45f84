"""Test kit: equivariance checks and a reusable model-test mixin.

`assert_equivariant` draws random elements of O(3) (proper rotations and
reflections), translations and permutations of atoms, applies them to the
inputs of a function, and checks that its outputs transform as declared.
Transformation kinds are strings "<indexing>:<type>" (see
`geognn.data.keys.TRANSFORMS`): indexing "node" is permuted with the atoms,
"graph" and "edge" are not; type is one of "scalar", "vector", "pseudovector",
"position" (rotates and translates), "rank2" (R X Rᵀ), "index" (atom indices,
e.g. ``edge_index``: relabelled by the permutation), or an e3nn irreps string
such as "8x0e + 4x1o" acting on the last dimension through the exact Wigner
matrices of `irreps_matrix` (e3nn's own ``D_from_matrix`` is ~1e-6 off, too
coarse for float64 checks).

`ModelTestMixin` holds the checks every energy model must pass; a model's
test module subclasses it and names the model (see tests/models).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from geognn.data import atoms_to_data, keys
from geognn.smiles import same_bond_graph, smiles_graph  # noqa: F401 - reference bond graphs, public here too

# Largest acceptable absolute error per dtype.
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 2e-2,
    torch.bfloat16: 1e-1,
}
TRANSFORMATIONS = ("rotation", "reflection", "translation", "permutation", "combined")


# --------------------------------------------------------------------------- random group elements


def random_rotation(dtype=torch.float64, generator: torch.Generator | None = None, proper: bool = True) -> Tensor:
    """A Haar-random element of SO(3) (``proper``) or of O(3) \\ SO(3), [3, 3]."""
    gaussian = torch.randn(3, 3, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if not proper:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    return q.to(dtype)


class _Transform:
    """x -> R x + t[structure] on positions, atoms relabelled within each structure."""

    def __init__(self, name: str, batch: Tensor, num_graphs: int, generator: torch.Generator):
        n = batch.shape[0]
        self.rotation = torch.eye(3, dtype=torch.float64)
        self.translation = torch.zeros(num_graphs, 3, dtype=torch.float64)
        self.perm = torch.arange(n)  # new atom k is old atom perm[k]
        if name in ("rotation", "reflection", "combined"):
            proper = name == "rotation" or (name == "combined" and bool(torch.rand(1, generator=generator) < 0.5))
            self.rotation = random_rotation(generator=generator, proper=proper)
        if name in ("translation", "combined"):
            self.translation = 10.0 * torch.randn(num_graphs, 3, dtype=torch.float64, generator=generator)
        if name in ("permutation", "combined"):
            # Shuffle within structures so that `batch` stays sorted.
            key = batch.cpu().double() * 2.0 + torch.rand(n, dtype=torch.float64, generator=generator)
            self.perm = torch.argsort(key)
        self.inverse_perm = torch.argsort(self.perm)
        self.batch = batch.cpu()
        self._irreps_matrices: dict[str, Tensor] = {}  # irreps kind -> its D(rotation), float64 on the CPU

    def apply(self, kind: str, x: Any) -> Any:
        if x is None or not isinstance(x, Tensor):
            return x
        indexing, _, rule = kind.partition(":")
        if indexing not in ("node", "graph", "edge") or not rule:
            raise ValueError(f"transformation kind must look like 'node:vector', got {kind!r}")
        device, dtype = x.device, x.dtype
        R = self.rotation.to(device=device, dtype=dtype if dtype.is_floating_point else torch.float64)
        if rule == "index":
            return self.inverse_perm.to(device)[x]
        if indexing == "node":
            x = x[self.perm.to(device)]
        if rule == "scalar":
            return x
        if rule in ("vector", "position"):
            x = x @ R.T
            if rule == "position":
                if indexing != "node":
                    raise ValueError(f"'position' needs node indexing, got {kind!r}")
                x = x + self.translation.to(device, dtype)[self.batch[self.perm].to(device)]
            return x
        if rule == "pseudovector":
            return torch.linalg.det(R) * (x @ R.T)
        if rule == "rank2":
            return R @ x @ R.T
        if rule not in self._irreps_matrices:
            self._irreps_matrices[rule] = irreps_matrix(rule, self.rotation)
        D = self._irreps_matrices[rule]
        if x.shape[-1] != D.shape[0]:
            raise ValueError(f"a tensor of kind {kind!r} needs last dimension {D.shape[0]}, got shape {list(x.shape)}")
        return x @ D.to(device=device, dtype=dtype).T


def irreps_matrix(irreps, rotation: Tensor) -> Tensor:
    """D [dim, dim], float64, by which features of ``irreps`` transform under ``rotation`` [3, 3] (det ±1): x -> D x.

    The exact matrix (`geognn.nn.irreps.wigner_d`, to float64 rounding), not
    e3nn's ``Irreps.D_from_matrix``: that one goes through Euler angles and
    is off the true representation by up to ~1e-6, which a chain of
    equivariant layers turns into errors above the float64 tolerance. Same
    convention as e3nn: block diagonal, one block per (mul, (l, p)), and an
    improper rotation multiplies each irrep by its parity p.
    """
    from e3nn import o3

    from geognn.nn.irreps import wigner_d

    try:
        irreps = o3.Irreps(irreps)
    except ValueError as error:
        raise ValueError(
            f"unknown transformation type {irreps!r}: use scalar, vector, position, pseudovector, rank2, index "
            "or an irreps string such as '8x0e + 4x1o'"
        ) from error
    rotation = rotation.detach().to(device="cpu", dtype=torch.float64)
    if torch.equal(rotation, torch.eye(3, dtype=torch.float64)):
        return torch.eye(irreps.dim, dtype=torch.float64)  # translations and permutations: exactly nothing to rotate
    return wigner_d(irreps, rotation)


# --------------------------------------------------------------------------- assert_equivariant


def assert_equivariant(
    func: Callable,
    args_in,
    kinds_in: Sequence[str] | Mapping[str, str] | None = None,
    kinds_out: Sequence[str] | Mapping[str, str] | None = None,
    *,
    batch: Tensor | None = None,
    transformations: Sequence[str] = TRANSFORMATIONS,
    num_trials: int = 2,
    atol: float | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Check ``func(g·x) == g·func(x)`` for random O(3) elements, translations and permutations.

    Three ways to call it:

    * tensors: ``assert_equivariant(func, [h, pos, edge_index], ["node:scalar",
      "node:position", "edge:index"], ["node:scalar", "node:position"])``;
    * an e3nn-style module with ``irreps_in``/``irreps_out`` and one input
      tensor [N, dim]: kinds are taken from the irreps;
    * a model and a PyG ``Data``/``Batch``: inputs and outputs transform as in
      `geognn.data.keys.TRANSFORMS` (``kinds_in``/``kinds_out`` mappings add
      or override keys); ``call_kwargs`` (e.g. ``{"compute_forces": True}``)
      are passed to the model.

    ``batch`` [N] assigns atoms to structures for permutations and
    per-structure translations (tensor form only; a ``Batch`` carries it).

    A kind is ``"<indexing>:<type>"``. Indexing ``node`` (first dimension
    runs over atoms: permuted with them), ``graph`` (per structure, e.g.
    energy, cell, stress: not permuted) or ``edge`` (per edge: edges keep
    their order, only ``index`` tensors are relabelled). Types,
    for rotation R (det ±1), translation t and permutation of the atoms:

    * ``scalar``: unchanged, e.g. ``"node:scalar"``, ``"graph:scalar"``;
    * ``vector``: x -> R x, e.g. ``"node:vector"`` (forces), ``"edge:vector"``;
    * ``position``: x -> R x + t, node indexing only (``"node:position"``);
    * ``pseudovector``: x -> det(R) R x (``"node:pseudovector"``);
    * ``rank2``: X -> R X Rᵀ on the last two dimensions (``"graph:rank2"``, stress);
    * ``index``: atom indices, relabelled by the permutation whatever the
      indexing (``"edge:index"`` for ``edge_index`` [2, E]);
    * an e3nn irreps string on the last dimension, e.g. ``"node:8x0e+4x1o"``:
      x -> D(R) x with the exact block-diagonal Wigner matrix of `irreps_matrix`
      (an improper R multiplies each irrep by its parity, as in e3nn).

    Returns the largest error per "transformation/output"; raises
    AssertionError listing every error above the tolerance (``atol`` or
    `TOLERANCES` for the output's dtype).
    """
    call_kwargs = dict(call_kwargs or {})
    from torch_geometric.data.data import BaseData

    if isinstance(args_in, BaseData):
        data = args_in
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(data.num_nodes, dtype=torch.long)
        original = data
        input_kinds = {**keys.TRANSFORMS, **dict(kinds_in or {})}
        transform_in = lambda T: _transform_data(data, T, input_kinds)  # noqa: E731
        run = lambda inputs: func(inputs, **call_kwargs)  # noqa: E731
        output_kinds = {**keys.TRANSFORMS, **dict(kinds_out or {})}
    else:
        args = list(args_in)
        if kinds_in is None and hasattr(func, "irreps_in") and hasattr(func, "irreps_out"):
            kinds_in, kinds_out = [f"node:{func.irreps_in}"], [f"node:{func.irreps_out}"]
        if kinds_in is None or kinds_out is None or len(kinds_in) != len(args):
            raise ValueError("give one kind per input in kinds_in, and kinds_out, e.g. ['node:vector']")
        if batch is None:
            first = next(a for a, k in zip(args, kinds_in) if isinstance(a, Tensor) and k.startswith("node"))
            batch = torch.zeros(first.shape[0], dtype=torch.long)
        original = args
        transform_in = lambda T: [T.apply(k, a) for k, a in zip(kinds_in, args)]  # noqa: E731
        run = lambda inputs: func(*inputs, **call_kwargs)  # noqa: E731
        output_kinds = kinds_out

    batch = batch.cpu()
    num_graphs = int(batch.max()) + 1 if batch.numel() else 1
    generator = torch.Generator().manual_seed(seed)
    reference = _named_outputs(run(original), output_kinds)

    errors: dict[str, float] = {}
    failures = []
    for name in transformations:
        if name not in TRANSFORMATIONS:
            raise ValueError(f"unknown transformation {name!r}; choose from {TRANSFORMATIONS}")
        for _ in range(num_trials):
            T = _Transform(name, batch, num_graphs, generator)
            transformed = _named_outputs(run(transform_in(T)), output_kinds)
            for key, (kind, value) in reference.items():
                expected = T.apply(kind, value.detach())
                got = transformed[key][1].detach()
                error = float((got - expected).abs().max()) if got.numel() else 0.0
                label = f"{name}/{key}"
                errors[label] = max(errors.get(label, 0.0), error)
                tol = atol if atol is not None else TOLERANCES.get(got.dtype, 1e-4)
                if not error <= tol:
                    failures.append(f"  {label}: max abs error {error:.3e} > {tol:.1e} ({kind})")
    if failures:
        raise AssertionError("not equivariant:\n" + "\n".join(sorted(set(failures))))
    return errors


def _named_outputs(out, kinds) -> dict[str, tuple[str, Tensor]]:
    """Pair each output tensor with its kind: {name: (kind, tensor)}."""
    if isinstance(out, Mapping):
        unknown = [k for k, v in out.items() if isinstance(v, Tensor) and k not in kinds]
        if unknown:
            raise ValueError(f"no transformation kind for output(s) {unknown}; pass them in kinds_out")
        return {k: (kinds[k], v) for k, v in out.items() if isinstance(v, Tensor)}
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    kinds = list(kinds.values()) if isinstance(kinds, Mapping) else list(kinds)
    if len(kinds) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(kinds)} kinds_out")
    return {str(k): (kind, v) for k, (kind, v) in enumerate(zip(kinds, outputs)) if isinstance(v, Tensor)}


def _transform_data(data, T: _Transform, kinds: Mapping[str, str]):
    """Copy of ``data`` with every tensor transformed by its kind.

    Per-atom tensors of unknown kind would not follow a permutation, so they
    are an error; other unknown tensors (``ptr``, graph-level labels) stay.
    """
    out = copy.copy(data)
    for key in data.keys():
        if key in kinds:
            out[key] = T.apply(kinds[key], data[key])
        elif key != keys.PTR and isinstance(data[key], Tensor) and data[key].shape[:1] == (data.num_nodes,):
            raise ValueError(f"no transformation kind for per-atom input {key!r}; pass kinds_in={{{key!r}: 'node:...'}}")
    return out


# --------------------------------------------------------------------------- fixtures


def molecules(dtype=torch.float64) -> list:
    """QM9-like molecules from ASE's G2 set (H, C, N, O, F), rattled so that no symmetry hides errors."""
    from ase.build import molecule

    structures = []
    for seed, name in enumerate(["CH3CHO", "H2O", "CH4", "NH3", "HCF3", "CH3CH2OH", "HCOOH", "CH3CONH2"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=seed)
        structures.append(atoms)
    return structures


def periodic_structures() -> list:
    """Small periodic cells: triclinic primitive Si and NaCl, and a Cu(111) slab (pbc = T, T, F)."""
    from ase.build import bulk, fcc111

    structures = [
        bulk("Si", "diamond", a=5.43),
        bulk("NaCl", "rocksalt", a=5.64),
        fcc111("Cu", size=(2, 2, 2), vacuum=4.0),
    ]
    for seed, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=seed)
    return structures


def to_batch(structures, dtype=torch.float64):
    from torch_geometric.data import Batch

    return Batch.from_data_list([atoms_to_data(a, dtype=dtype) for a in structures])


# --------------------------------------------------------------------------- model checks


def check_batch_equals_single(model, structures, atol: float = 1e-10) -> None:
    """Energies (and forces, for models that use positions) of a batch equal those of each structure alone."""
    dtype = model.dtype
    forces = model.uses_positions
    together = model(to_batch(structures, dtype), compute_forces=forces)
    offset = 0
    for k, atoms in enumerate(structures):
        alone = model(atoms_to_data(atoms, dtype=dtype), compute_forces=forces)
        n = len(atoms)
        _assert_close(together[keys.ENERGY][k], alone[keys.ENERGY][0], atol, f"energy of structure {k}")
        if forces:
            _assert_close(together[keys.FORCES][offset : offset + n], alone[keys.FORCES], atol,
                          f"forces of structure {k}")
        offset += n


def check_forces_finite_differences(model, atoms, step: float = 1e-5, atol: float = 1e-7) -> None:
    """Forces equal central finite differences of the energy, for every coordinate."""
    dtype = model.dtype
    data = atoms_to_data(atoms, dtype=dtype)
    forces = model(data, compute_forces=True)[keys.FORCES].detach()
    numerical = torch.zeros_like(forces)
    with torch.no_grad():
        for a in range(len(atoms)):
            for c in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    moved = data.clone()
                    moved[keys.POSITIONS][a, c] += sign * step
                    energies.append(model(moved)[keys.ENERGY].sum())
                numerical[a, c] = -(energies[0] - energies[1]) / (2 * step)
    _assert_close(forces, numerical, atol, "forces vs finite differences")


def check_stress_finite_differences(model, atoms, step: float = 1e-5, atol: float = 1e-7) -> None:
    """Stress equals (1/V) dE/dε by central differences of symmetric strains of positions and cell."""
    dtype = model.dtype
    data = atoms_to_data(atoms, dtype=dtype)
    stress = model(data, compute_stress=True)[keys.STRESS][0].detach()
    volume = abs(float(np.linalg.det(atoms.cell[:])))
    numerical = torch.zeros(3, 3, dtype=dtype)
    with torch.no_grad():
        for a in range(3):
            for b in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    strain = torch.eye(3, dtype=dtype)
                    strain[a, b] += 0.5 * sign * step
                    strain[b, a] += 0.5 * sign * step
                    moved = data.clone()
                    moved[keys.POSITIONS] = data[keys.POSITIONS] @ strain
                    moved[keys.CELL] = data[keys.CELL] @ strain
                    energies.append(model(moved)[keys.ENERGY].sum())
                numerical[a, b] = (energies[0] - energies[1]) / (2 * step) / volume
    _assert_close(stress, numerical, atol, "stress vs finite differences")


def check_cutoff_smoothness(model, delta: float = 1e-7, atol: float = 1e-8) -> None:
    """Energy and forces are continuous as an atom crosses the cutoff.

    A carbon atom approaches the O of a water molecule along the side away
    from the H atoms; at distances cutoff ± delta only the C-O pair changes
    from outside to inside the cutoff. A jump stays whatever ``delta`` is;
    a continuous force still changes by about 2·delta·∂F/∂r, which is not zero
    for envelopes whose second derivative is not zero at the cutoff
    (SchNet's cosine), hence a delta small enough for that slope to stay
    below ``atol``.
    """
    from ase import Atoms
    from ase.build import molecule

    cutoff = float(model.config.cutoff)
    water = molecule("H2O")
    oxygen = water.positions[0]
    bisector = water.positions[1:].mean(0) - oxygen
    direction = -bisector / np.linalg.norm(bisector)
    dtype = model.dtype
    results = []
    for distance in (cutoff - delta, cutoff + delta):
        atoms = water + Atoms("C", positions=[oxygen + distance * direction])
        out = model(atoms_to_data(atoms, dtype=dtype), compute_forces=True)
        results.append((out[keys.ENERGY].detach(), out[keys.FORCES].detach()))
    _assert_close(results[0][0], results[1][0], atol, f"energy across the cutoff ({cutoff} ± {delta} Å)")
    _assert_close(results[0][1], results[1][1], atol, f"forces across the cutoff ({cutoff} ± {delta} Å)")


def symmetric_sites() -> list:
    """Structures with an atom (index 0) on a centre of inversion, and the direction to displace it:
    a perfect fcc Cu crystal (2×2×2 conventional cell, 32 atoms) along a general direction, and a
    collinear C–C–C triple (1.4 Å bonds; atom 0 the middle one) perpendicular to its line, where
    the bond angle passes through 180°."""
    from ase import Atoms
    from ase.build import bulk

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    general = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    triple = Atoms("C3", positions=[[0.0, 0.0, 0.0], [-1.4, 0.0, 0.0], [1.4, 0.0, 0.0]])
    return [("perfect fcc site", crystal, general), ("collinear triple", triple, np.array([0.0, 1.0, 0.0]))]


def check_smooth_at_symmetric_sites(model, deltas=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3), rtol: float = 0.01) -> None:
    """The energy is smooth where features vanish by symmetry: F·d/δ, the restoring force on an atom
    displaced by δ along d from a centre of inversion (`symmetric_sites`), divided by δ, is the same
    for every δ (within ``rtol``). A cusp there (PaiNN's paper form, ‖v‖ = sqrt(v² + ε)) makes it
    change by orders of magnitude between δ = 1e-7 and 1e-3 Å; it breaks finite-displacement phonons
    and relaxations through symmetric sites."""
    dtype = model.dtype
    for name, atoms, direction in symmetric_sites():
        if not (model.config.cutoff > 1.5):
            raise ValueError("the check needs a cutoff above 1.5 Å")
        ratios = []
        for delta in deltas:
            moved = atoms.copy()
            moved.positions[0] += delta * direction
            data = atoms_to_data(moved, dtype=dtype)
            forces = model(data, compute_forces=True)[keys.FORCES].detach()
            ratios.append(float(forces[0].double() @ torch.as_tensor(direction)) / delta)
        reference = ratios[-1]
        spread = max(abs(r - reference) for r in ratios)
        if not spread <= rtol * abs(reference):
            shown = ", ".join(f"{d:g} Å: {r:.5g}" for d, r in zip(deltas, ratios))
            raise AssertionError(f"F·d/δ at a {name} is not constant within {rtol:.0%} ({shown}, in eV/Å²): "
                                 "the energy has a cusp where the atom sits on a centre of inversion")


def check_isolated_atoms(model) -> None:
    """A lone atom, and atoms all farther apart than the cutoff: finite energy, zero forces."""
    from ase import Atoms

    cutoff = float(model.config.cutoff)
    dtype = model.dtype
    spread = Atoms("CNO", positions=[[0, 0, 0], [2 * cutoff, 0, 0], [0, 3 * cutoff, 0]])
    for atoms in (Atoms("H", positions=[[0.1, 0.2, 0.3]]), spread):
        out = model(atoms_to_data(atoms, dtype=dtype), compute_forces=model.uses_positions)
        if not bool(torch.isfinite(out[keys.ENERGY]).all()):
            raise AssertionError(f"non-finite energy for isolated atoms {atoms.get_chemical_formula()}")
        if model.uses_positions:
            _assert_close(out[keys.FORCES], torch.zeros_like(out[keys.FORCES]), 1e-12, "forces on isolated atoms")


def check_additivity(model, first, second, atol: float = 1e-10) -> None:
    """Two structures farther apart than the cutoff: energy is the sum, forces those of each alone."""
    dtype = model.dtype
    forces = model.uses_positions
    far = second.copy()
    gap = float(model.config.cutoff) + 1.0
    far.positions += first.positions.max(0) - far.positions.min(0) + gap
    joined = model(atoms_to_data(first + far, dtype=dtype), compute_forces=forces)
    parts = [model(atoms_to_data(a, dtype=dtype), compute_forces=forces) for a in (first, far)]
    _assert_close(joined[keys.ENERGY], parts[0][keys.ENERGY] + parts[1][keys.ENERGY], atol, "energy of separated parts")
    if forces:
        _assert_close(joined[keys.FORCES], torch.cat([p[keys.FORCES] for p in parts]), atol,
                      "forces of separated parts")


def check_refuses_forces(model) -> None:
    """A model that does not use positions refuses forces and stress with a message saying so."""
    dtype = model.dtype
    for call, data in (({"compute_forces": True}, to_batch(molecules()[:2], dtype)),
                       ({"compute_stress": True}, to_batch(periodic_structures()[:1], dtype))):
        try:
            model(data, **call)
        except ValueError as error:
            if "positions" not in str(error):
                raise AssertionError(f"{call}: the error does not say why: {error}") from error
        else:
            raise AssertionError(f"{type(model).__name__} does not use positions but gave {call}")


def _assert_close(actual: Tensor, expected: Tensor, atol: float, what: str) -> None:
    error = float((actual.detach() - expected.detach()).abs().max()) if actual.numel() else 0.0
    if not error <= atol:
        raise AssertionError(f"{what}: max abs error {error:.3e} > {atol:.1e}")


# --------------------------------------------------------------------------- mixin


# Which mixin checks apply to which kind of model. A check lists the properties it needs:
#   "positions"     the energy is differentiable in the positions (`EnergyModel.uses_positions`)
#   "no positions"  the model sees coordinates only through its graph and must refuse forces
#   "periodic"      the model takes periodic cells (`ModelTestMixin.supports_periodic`)
#   "smooth cutoff" its graph is a radius graph, whose cutoff must be crossed smoothly
#   "extensive"     separated structures add up (`EnergyModel.size_extensive`)
CHECK_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "test_equivariance_molecules": (),
    "test_equivariance_periodic": ("periodic",),
    "test_batch_equals_single": (),
    "test_forces_match_finite_differences": ("positions",),
    "test_stress_matches_finite_differences": ("positions", "periodic"),
    "test_smooth_at_cutoff": ("positions", "smooth cutoff"),
    "test_isolated_atoms": (),
    "test_smooth_at_symmetric_sites": ("positions", "periodic"),
    "test_additive_at_large_separation": ("extensive",),
    "test_refuses_forces_and_stress": ("no positions",),
    "test_rejects_bad_input": (),
    "test_forces_are_trainable": ("positions",),
    "test_energy_is_trainable": (),
    "test_config_and_state_dict_round_trip": (),
    "test_cuda_equals_cpu": (),
}


def missing_requirements(model_class, supports_periodic: bool = True) -> dict[str, str]:
    """For each check of `CHECK_REQUIREMENTS` that does not apply to ``model_class``, the reason."""
    has = {
        "positions": model_class.uses_positions,
        "no positions": not model_class.uses_positions,
        "periodic": supports_periodic,
        "smooth cutoff": model_class.graph_builder == "radius",
        "extensive": model_class.size_extensive,
    }
    reasons = {
        "positions": "its energy does not depend smoothly on the positions (uses_positions = False): no forces or stress",
        "no positions": "it uses positions, so it has forces and stress",
        "periodic": "it does not take periodic cells",
        "smooth cutoff": f"its graph is {model_class.graph_builder!r}, not a radius graph with a smooth cutoff",
        "extensive": "its readout couples separate structures (size_extensive = False)",
    }
    missing = {}
    for check, needs in CHECK_REQUIREMENTS.items():
        unmet = [reasons[need] for need in needs if not has[need]]
        if unmet:
            missing[check] = "; ".join(unmet)
    return missing


class ModelTestMixin:
    """Checks every energy model passes, as far as they apply to its kind. In a test module::

        class TestEGNN(ModelTestMixin):
            model_name = "egnn"
            model_kwargs = {"hidden_channels": 16, "num_layers": 2}

    Tests run in float64 on `molecules()` and `periodic_structures()`.
    Set ``supports_periodic = False`` for molecule-only models. Which checks apply to which
    kind of model is written in `CHECK_REQUIREMENTS`; a check that does not apply is skipped
    with the reason (e.g. a bond-graph model has no forces, so the finite-difference checks are
    replaced by `check_refuses_forces`).
    """

    model_name: str = ""
    model_kwargs: dict = {}
    supports_periodic: bool = True
    seed: int = 0

    def make_model(self):
        from geognn.models import build_model

        torch.manual_seed(self.seed)
        return build_model(self.model_name, **self.model_kwargs).double().eval()

    def _require(self, check: str) -> None:
        from geognn.models import MODELS

        reason = missing_requirements(MODELS[self.model_name], self.supports_periodic).get(check)
        if reason is not None:
            import pytest

            pytest.skip(f"{check} does not apply to {self.model_name}: {reason}")

    def test_equivariance_molecules(self):
        model = self.make_model()
        errors = assert_equivariant(model, to_batch(molecules()), call_kwargs={"compute_forces": model.uses_positions})
        assert any(key.endswith(keys.ENERGY) for key in errors)
        assert any(key.endswith(keys.FORCES) for key in errors) == model.uses_positions

    def test_equivariance_periodic(self):
        self._require("test_equivariance_periodic")
        model = self.make_model()
        forces = model.uses_positions
        call = {"compute_forces": forces, "compute_stress": forces}
        errors = assert_equivariant(model, to_batch(periodic_structures()), call_kwargs=call)
        assert any(key.endswith(keys.ENERGY) for key in errors)
        assert any(key.endswith(keys.STRESS) for key in errors) == forces

    def test_batch_equals_single(self):
        model = self.make_model()
        check_batch_equals_single(model, molecules())
        if self.supports_periodic:
            check_batch_equals_single(model, periodic_structures())

    def test_forces_match_finite_differences(self):
        self._require("test_forces_match_finite_differences")
        model = self.make_model()
        check_forces_finite_differences(model, molecules()[0])
        if self.supports_periodic:
            check_forces_finite_differences(model, periodic_structures()[0])

    def test_stress_matches_finite_differences(self):
        self._require("test_stress_matches_finite_differences")
        model = self.make_model()
        for atoms in periodic_structures()[:2]:
            check_stress_finite_differences(model, atoms)

    def test_smooth_at_cutoff(self):
        self._require("test_smooth_at_cutoff")
        check_cutoff_smoothness(self.make_model())

    def test_isolated_atoms(self):
        check_isolated_atoms(self.make_model())

    def test_smooth_at_symmetric_sites(self):
        self._require("test_smooth_at_symmetric_sites")
        check_smooth_at_symmetric_sites(self.make_model())

    def test_additive_at_large_separation(self):
        self._require("test_additive_at_large_separation")
        structures = molecules()
        check_additivity(self.make_model(), structures[0], structures[4])

    def test_refuses_forces_and_stress(self):
        self._require("test_refuses_forces_and_stress")
        check_refuses_forces(self.make_model())

    def test_rejects_bad_input(self):
        import pytest

        model = self.make_model()
        data = atoms_to_data(molecules()[1], dtype=torch.float64)
        bad = data.clone()
        bad[keys.POSITIONS][0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            model(bad)
        bad = data.clone()
        bad[keys.ATOMIC_NUMBERS][0] = model.config.max_atomic_number + 1
        with pytest.raises(ValueError, match="embedding"):
            model(bad)
        with pytest.raises(TypeError, match="float32"):
            model(atoms_to_data(molecules()[1], dtype=torch.float32))

    def test_forces_are_trainable(self):
        """In training mode, a force loss back-propagates to the parameters."""
        self._require("test_forces_are_trainable")
        model = self.make_model().train()
        out = model(to_batch(molecules()[:3]), compute_forces=True)
        _assert_trainable(model, out[keys.FORCES].pow(2).sum())

    def test_energy_is_trainable(self):
        """In training mode, an energy loss back-propagates to the parameters."""
        model = self.make_model().train()
        out = model(to_batch(molecules()[:3]))
        _assert_trainable(model, out[keys.ENERGY].pow(2).sum())

    def test_config_and_state_dict_round_trip(self, tmp_path):
        """A model rebuilt from its config and a weights_only state_dict gives the same outputs."""
        from geognn.models import build_model

        model = self.make_model()
        path = tmp_path / "model.pt"
        torch.save({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict()}, path)
        saved = torch.load(path, weights_only=True)
        rebuilt = build_model(self.model_name, **saved["config"]).double().eval()
        rebuilt.load_state_dict(saved["state_dict"])
        data = to_batch(molecules()[:3])
        _assert_close(rebuilt(data)[keys.ENERGY], model(data)[keys.ENERGY], 0.0, "energy after round trip")


    def test_cuda_equals_cpu(self):
        """Energies (and forces) on the GPU equal the CPU's in float64; skipped, saying so, without CUDA."""
        if not torch.cuda.is_available():
            import pytest

            pytest.skip("needs CUDA")
        model = self.make_model()
        forces = model.uses_positions
        structures = molecules() + (periodic_structures() if self.supports_periodic else [])
        for group in (structures[:8], structures[8:]):
            if not group:
                continue
            data = to_batch(group)
            cpu = model(data, compute_forces=forces)
            gpu = model.to("cuda")(data.to("cuda"), compute_forces=forces)
            model.to("cpu")
            for key in (keys.ENERGY, keys.FORCES) if forces else (keys.ENERGY,):
                _assert_close(gpu[key].cpu(), cpu[key], 1e-9, f"{key} on CUDA vs CPU")


def _assert_trainable(model, loss: Tensor) -> None:
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
