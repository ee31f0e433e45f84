"""Periodic edge cases for every 3D model, and coincident atoms refused where data enters.

The structures go the way the calculator and training send them: `atoms_to_data` (one
structure), PyG's `Batch` (several), `ASEDataset` (an extxyz file whose periodic and
non-periodic frames are padded to batch together). Each check fails on a specific mistake:

* a slab (pbc T, T, F) whose vacuum is thinner than the cutoff: treating z as periodic, or
  wrapping positions along it, changes the energy when the slab moves along z or the cell
  vector along z changes; dropping in-plane images changes it when an atom moves by a
  lattice vector;
* a cell smaller than the cutoff: keeping only the nearest image of each neighbour, or
  none of an atom's own images, breaks E(2x2x2 supercell) = 8 E(cell);
* an atom with no neighbour in a batch of crystals: a scatter that skips empty rows, a
  division by a zero neighbour count or a zero cell volume shows up as a changed or NaN
  energy;
* a cell given with pbc False: using that cell anyway gives the energy of a crystal.
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from torch_geometric.data import Batch, Data

from geognn.calculator import GeoGNNCalculator
from geognn.data import ASEDataset, atoms_to_data, keys
from geognn.data import atoms as atoms_module
from geognn.data.ase_dataset import DatasetFormatError
from geognn.models import MODELS, build_model
from geognn.testing import check_forces_finite_differences, periodic_structures

# Every model that takes 3D positions, at small widths like those of its own tests (tests/models).
# DimeNet's default output layer starts at zero (an energy that is 0 whatever the geometry), so
# these start from a random one.
SMALL_3D = {
    "schnet": {"hidden_channels": 16, "num_filters": 12, "num_interactions": 2, "num_gaussians": 10},
    "egnn": {"hidden_channels": 16, "num_layers": 2, "num_radial": 6, "vector_channels": 4},
    "dimenet": {"hidden_channels": 16, "num_blocks": 2, "num_bilinear": 4, "num_spherical": 4, "num_radial": 4,
                "output_init": "glorot_orthogonal"},
    "dimenet++": {"hidden_channels": 16, "num_blocks": 2, "int_emb_size": 8, "basis_emb_size": 4,
                  "out_emb_channels": 16, "num_spherical": 4, "num_radial": 4, "output_init": "glorot_orthogonal"},
    "painn": {"hidden_channels": 8, "num_layers": 2, "num_radial": 6},
    "nequip": {"num_features": 4, "num_layers": 2, "num_radial": 4, "radial_mlp": (8,), "avg_num_neighbors": 8.0,
               "l_max": 1},
    "mace": {"hidden_irreps": "4x0e + 4x1o", "max_ell": 2, "num_bessel": 4, "radial_MLP": (8,),
             "MLP_irreps": "4x0e", "avg_num_neighbors": 8.0, "correlation": 2},
}
MODELS_3D = list(SMALL_3D)
CUTOFF = 5.0
TIGHT = 1e-10  # float64: sums over different numbers of terms, in a different order


def _assert_close(actual, expected, atol: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol,
                               msg=lambda message: f"{what}: {message}")


def make_model(name: str, **overrides):
    torch.manual_seed(0)
    options = {"max_atomic_number": 30, "cutoff": CUTOFF, **SMALL_3D[name], **overrides}
    return build_model(name, **options).double().eval()


@pytest.fixture(scope="module", params=MODELS_3D)
def model(request):
    return make_model(request.param)


def test_every_3d_model_is_covered():
    """A model added to the registry that reads positions through a radius graph is tested here too."""
    radius_models = {name for name, cls in MODELS.items() if cls.uses_positions and cls.graph_builder == "radius"}
    assert radius_models == set(SMALL_3D)


def evaluate(model, structures, stress: bool = False) -> dict:
    """Energies [B], forces [N, 3] (and stress [B, 3, 3]) of ``ase.Atoms`` or ``Data``, batched as in training."""
    data = [s if isinstance(s, Data) else atoms_to_data(s, dtype=torch.float64) for s in structures]
    out = model(Batch.from_data_list(data), compute_forces=True, compute_stress=stress)
    return {key: value.detach() for key, value in out.items()}


# --------------------------------------------------------------------------- slabs (pbc T, T, F)


def thin_slab() -> Atoms:
    """A rattled Cu(111) slab, 2x1 in-plane and 2 layers, with 1 Å of vacuum on each side: along z
    its images would lie within the cutoff, and in-plane every atom sees images of itself and of
    the others."""
    slab = fcc111("Cu", size=(2, 1, 2), vacuum=1.0)
    slab.rattle(0.05, seed=2)
    assert slab.pbc.tolist() == [True, True, False]
    assert slab.cell[2, 2] - np.ptp(slab.positions[:, 2]) < CUTOFF  # z images would interact if z were periodic
    return slab


def test_slab_ignores_the_vector_along_its_non_periodic_direction(model):
    slab = thin_slab()
    variants = [slab]
    for c in ([0.0, 0.0, 0.0], [0.0, 0.0, 300.0], [1.7, -0.9, 4.2]):  # zero, long, short and tilted
        other = slab.copy()
        other.cell[2] = c
        variants.append(other)
    out = evaluate(model, variants)
    assert bool(torch.isfinite(out[keys.ENERGY]).all())
    for k in range(1, len(variants)):
        _assert_close(out[keys.ENERGY][k], out[keys.ENERGY][0], TIGHT, f"energy with cell[2] = {variants[k].cell[2]}")
    forces = out[keys.FORCES].view(len(variants), len(slab), 3)
    _assert_close(forces, forces[:1].expand_as(forces), TIGHT, "forces as the vector along z changes")
    # Not periodic along z, yet periodic in-plane: unlike the slab with z periodic, or a lone cluster.
    along_z = slab.copy()
    along_z.pbc = True
    cluster = slab.copy()
    cluster.pbc = False
    others = torch.cat([evaluate(model, [along_z])[keys.ENERGY], evaluate(model, [cluster])[keys.ENERGY]])
    assert float((others - out[keys.ENERGY][0]).abs().min()) > 1e-6, "slab energy = a 3D crystal's or a cluster's"


def test_slab_is_invariant_under_translations_along_z_and_lattice_translations(model):
    slab = thin_slab()
    far = slab.copy()
    far.positions += [0.0, 0.0, 731.37]  # far outside the cell along the non-periodic direction
    below = slab.copy()
    below.positions -= [0.0, 0.0, 2048.5]
    in_plane = slab.copy()
    in_plane.positions += 0.37 * slab.cell[0] - 1.21 * slab.cell[1]  # a continuous in-plane translation
    jumped = slab.copy()
    jumped.positions[[0, 3]] += [slab.cell[0] - 2 * slab.cell[1], 3 * slab.cell[1]]  # atoms moved by lattice vectors
    out = evaluate(model, [slab, far, below, in_plane, jumped])
    n = len(slab)
    for k, what in enumerate(["z + 731 Å", "z - 2048 Å", "in-plane shift", "atoms moved by lattice vectors"], 1):
        _assert_close(out[keys.ENERGY][k], out[keys.ENERGY][0], 1e-9, f"slab energy after {what}")
        _assert_close(out[keys.FORCES][k * n:(k + 1) * n], out[keys.FORCES][:n], 1e-9, f"slab forces after {what}")
    assert float(out[keys.FORCES][:n].abs().max()) > 1e-6, "no forces on a rattled slab: positions ignored?"
    # Without its in-plane images the moved atoms would sit far from the rest.
    cluster = jumped.copy()
    cluster.pbc = False
    assert abs(float(evaluate(model, [cluster])[keys.ENERGY][0] - out[keys.ENERGY][0])) > 1e-6


def test_slab_forces_equal_finite_differences(model):
    check_forces_finite_differences(model, thin_slab())


# --------------------------------------------------------------------------- cells smaller than the cutoff


def small_cell() -> Atoms:
    """Two atoms in a slightly triclinic ~2 Å cell: with a 5 Å cutoff each neighbour and the atoms
    themselves appear through many images, up to three cells away."""
    cell = [[2.0, 0.0, 0.0], [0.15, 2.05, 0.0], [-0.1, 0.2, 1.95]]
    return Atoms("CO", scaled_positions=[[0.02, 0.05, 0.01], [0.47, 0.55, 0.58]], cell=cell, pbc=True)


def test_cell_smaller_than_the_cutoff_equals_its_supercell(model):
    cell = small_cell()
    supercell = cell.repeat((2, 2, 2))
    out = evaluate(model, [cell, supercell], stress=True)
    energy, forces, stress = out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]
    _assert_close(energy[1], 8 * energy[0], 1e-9, "E(2x2x2 supercell) - 8 E(cell)")
    # ase's repeat lays the supercell out as 8 copies of the cell's atoms, in order.
    cell_forces, super_forces = forces[:2], forces[2:].view(8, 2, 3)
    _assert_close(super_forces, cell_forces.expand(8, 2, 3), 1e-9, "supercell forces vs the cell's, by image")
    _assert_close(stress[1], stress[0], 1e-9, "stress of the supercell vs the cell")
    assert float(cell_forces.abs().max()) > 1e-6 and float(stress[0].abs().max()) > 1e-8
    assert bool(torch.isfinite(energy).all())


def test_single_atom_cell(model):
    primitive = bulk("Cu", "fcc", a=3.6)  # one atom: every neighbour is one of its own images
    assert len(primitive) == 1
    supercell = primitive.repeat((2, 2, 2))
    supercell.positions += [0.3, -0.2, 0.1]  # a translation changes nothing
    out = evaluate(model, [primitive, supercell], stress=True)
    energy = out[keys.ENERGY]
    _assert_close(energy[1] / 8, energy[0], 1e-10, "E(2x2x2) / 8 vs E(one-atom cell)")
    assert abs(float(energy[0])) > 1e-8, "the energy of a one-atom cell must not vanish (images dropped?)"
    _assert_close(out[keys.FORCES], torch.zeros_like(out[keys.FORCES]), 1e-10, "forces on a perfect fcc lattice")
    _assert_close(out[keys.STRESS][1], out[keys.STRESS][0], 1e-10, "stress of the supercell vs the one-atom cell")
    # A cell of one atom differs from that atom alone: its images are neighbours.
    alone = evaluate(model, [Atoms("Cu", positions=[[0.0, 0.0, 0.0]])])[keys.ENERGY]
    assert abs(float(alone[0] - energy[0])) > 1e-6


# --------------------------------------------------------------------------- an atom without neighbours among crystals


def test_isolated_atom_in_a_batch_of_crystals(model, tmp_path):
    """Through `ASEDataset`: a molecule frame (an H atom, no cell) gets a zero cell and pbc False
    to batch with the crystals; a Ne atom in a box wider than the cutoff is periodic but has
    no neighbour either."""
    crystals = periodic_structures()[:2]  # rattled Si and NaCl, triclinic primitive cells
    lone_h = Atoms("H", positions=[[0.3, -0.2, 0.1]])
    boxed_ne = Atoms("Ne", positions=[[1.0, 2.0, 3.0]], cell=np.diag([2 * CUTOFF + 1.0] * 3), pbc=True)
    frames = [crystals[0], lone_h, crystals[1], boxed_ne]
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, frames, format="extxyz")
    dataset = ASEDataset(path, energy_key=None, forces_key=None, stress_key=None, dtype=torch.float64, cache=False)
    assert len(dataset) == 4
    read = ase.io.read(path, ":")  # the positions as written (8 decimals)
    mixed = model(Batch.from_data_list(list(dataset)), compute_forces=True, compute_stress=True)
    energy, forces = mixed[keys.ENERGY].detach(), mixed[keys.FORCES].detach()
    assert bool(torch.isfinite(energy).all()) and bool(torch.isfinite(forces).all())
    sizes = [len(a) for a in read]
    starts = np.cumsum([0] + sizes)
    for k, atoms in enumerate(read):
        alone = evaluate(model, [atoms], stress=bool(atoms.pbc.any()))
        _assert_close(energy[k], alone[keys.ENERGY][0], TIGHT, f"energy of frame {k} in the mixed batch vs alone")
        _assert_close(forces[starts[k]:starts[k + 1]], alone[keys.FORCES], TIGHT, f"forces of frame {k}")
        if atoms.pbc.any():
            _assert_close(mixed[keys.STRESS][k].detach(), alone[keys.STRESS][0], TIGHT, f"stress of frame {k}")
    for k in (1, 3):
        _assert_close(forces[starts[k]:starts[k + 1]], torch.zeros(1, 3, dtype=torch.float64), 0.0,
                      f"force on the isolated atom of frame {k}")
    # The crystals' energies do not depend on the isolated atoms batched with them.
    crystals_only = evaluate(model, [read[0], read[2]])[keys.ENERGY]
    _assert_close(energy[[0, 2]], crystals_only, TIGHT, "crystal energies with and without the isolated atoms")
    # A periodic atom without neighbours is the same atom without a cell.
    ne = evaluate(model, [Atoms("Ne", positions=[[1.0, 2.0, 3.0]])])[keys.ENERGY]
    _assert_close(energy[3], ne[0], TIGHT, "Ne in a wide box vs Ne alone")


# --------------------------------------------------------------------------- a cell with pbc False


def test_cell_without_pbc_is_a_molecule(model):
    """A cell with pbc all False is ignored: the molecule's energy with no cell, whether the cell
    arrives through `atoms_to_data`, as an explicit ``cell``/``pbc`` in the data (as `ASEDataset`
    pads non-periodic frames), or in a batch beside a crystal."""
    acetaldehyde = molecule("CH3CHO")
    acetaldehyde.rattle(0.05, seed=3)
    reference = evaluate(model, [acetaldehyde])
    with_cell = acetaldehyde.copy()
    with_cell.cell = [[4.0, 0.0, 0.0], [0.3, 3.9, 0.0], [0.0, 0.2, 4.1]]  # images would lie within the cutoff
    with_cell.pbc = False
    assert keys.CELL not in atoms_to_data(with_cell)
    plain = atoms_to_data(acetaldehyde, dtype=torch.float64)
    explicit = Data(z=plain.z, pos=plain.pos, cell=torch.tensor(with_cell.cell[:]).view(1, 3, 3),
                    pbc=torch.zeros(1, 3, dtype=torch.bool))
    crystal = atoms_to_data(periodic_structures()[0], dtype=torch.float64)
    converted = evaluate(model, [with_cell])
    _assert_close(converted[keys.ENERGY], reference[keys.ENERGY], TIGHT, "energy with a cell and pbc False")
    out = evaluate(model, [explicit, crystal, explicit])
    n = len(acetaldehyde)
    for k, start in ((0, 0), (2, n + len(crystal.z))):
        _assert_close(out[keys.ENERGY][k], reference[keys.ENERGY][0], TIGHT, f"energy of structure {k}")
        _assert_close(out[keys.FORCES][start:start + n], reference[keys.FORCES], TIGHT, f"forces of structure {k}")
    # The same cell with pbc True is a (dense) crystal: a different energy.
    periodic = with_cell.copy()
    periodic.pbc = True
    assert abs(float(evaluate(model, [periodic])[keys.ENERGY][0] - reference[keys.ENERGY][0])) > 1e-6


def test_calculator_treats_a_cell_without_pbc_as_a_molecule(model):
    water = molecule("H2O")
    water.center(vacuum=1.0)  # a cell smaller than the cutoff around it
    assert not water.pbc.any()
    water.calc = GeoGNNCalculator(model)
    energy, forces = water.get_potential_energy(), water.get_forces()
    reference = evaluate(model, [molecule("H2O")])  # no cell; translated, which changes nothing
    assert energy == pytest.approx(float(reference[keys.ENERGY][0]), abs=1e-10)
    np.testing.assert_allclose(forces, reference[keys.FORCES].numpy(), atol=1e-10)


# --------------------------------------------------------------------------- coincident atoms


@pytest.fixture(params=["every pair", "neighbour search"])
def check_path(request, monkeypatch):
    """Both ways `atoms_to_data` looks for coincident atoms: small structures compare every pair,
    large ones search neighbours (forced here by lowering the size limit)."""
    if request.param == "neighbour search":
        monkeypatch.setattr(atoms_module, "_DENSE_ATOMS", 0)
    return request.param


def acetaldehyde_with_a_duplicate() -> Atoms:
    acetaldehyde = molecule("CH3CHO")
    return acetaldehyde + Atoms("H", positions=[acetaldehyde.positions[4]])  # atom 7 on atom 4 (an H)


def crystal_with_an_image_coincidence() -> Atoms:
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    crystal.rattle(0.02, seed=0)
    crystal.positions[5] = crystal.positions[2] + crystal.cell[0] - 2 * crystal.cell[2]
    return crystal


def test_coincident_atoms_in_a_molecule_are_named(check_path):
    with pytest.raises(ValueError, match=r"C2H5O: atoms 4 \(H\) and 7 \(H\) are at the same position "
                                         r"\(.*; 0\.0e\+00 Å apart\)"):
        atoms_to_data(acetaldehyde_with_a_duplicate())


def test_an_atom_on_another_atoms_periodic_image_is_named(check_path):
    with pytest.raises(ValueError, match=r"Cu8: atoms 2 \(Cu\) and 5 \(Cu\) coincide through the periodic cell: "
                                         r"atom 5 shifted by \[-1, 0, 2\] cell vectors lies on atom 2"):
        atoms_to_data(crystal_with_an_image_coincidence())


def test_several_coincidences_are_counted_and_images_across_a_slab_found(check_path):
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    slab.positions[3] = slab.positions[0] + 2 * slab.cell[1]  # an in-plane image
    slab.positions[7] = slab.positions[6]
    with pytest.raises(ValueError,
                       match=r"atoms 0 \(Cu\) and 3 \(Cu\) coincide .* \[0, -2, 0\] .*\(1 more such pair\)"):
        atoms_to_data(slab)
    # Along the non-periodic direction a cell vector away is just far away.
    apart = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    apart.positions[3] = apart.positions[0] + apart.cell[2]
    atoms_to_data(apart)


def test_near_but_distinct_atoms_are_kept(check_path, model):
    close = molecule("H2O") + Atoms("H", positions=[molecule("H2O").positions[1] + [0.1, 0.0, 0.0]])
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    crystal.positions[1] = crystal.positions[0] + crystal.cell[1] + [0.0, 0.0, 0.1]  # 0.1 Å from an image
    out = evaluate(model, [close, crystal])
    assert bool(torch.isfinite(out[keys.ENERGY]).all()) and bool(torch.isfinite(out[keys.FORCES]).all())


def test_calculator_names_coincident_atoms():
    """SchNet, which reads distances only, gave a finite energy for coincident atoms (the other
    models NaN): the calculator refuses them before any model runs."""
    model = make_model("schnet")
    atoms = acetaldehyde_with_a_duplicate()
    atoms.calc = GeoGNNCalculator(model)
    with pytest.raises(ValueError, match=r"atoms 4 \(H\) and 7 \(H\) are at the same position"):
        atoms.get_potential_energy()
    crystal = crystal_with_an_image_coincidence()
    crystal.calc = GeoGNNCalculator(model)
    with pytest.raises(ValueError, match=r"atoms 2 \(Cu\) and 5 \(Cu\) coincide through the periodic cell"):
        crystal.get_forces()
    # An MD step that lands an atom on another is refused at that step.
    good = molecule("H2O")
    good.calc = GeoGNNCalculator(model)
    assert np.isfinite(good.get_potential_energy())
    good.positions[2] = good.positions[1]
    with pytest.raises(ValueError, match=r"atoms 1 \(H\) and 2 \(H\) are at the same position"):
        good.get_forces()


def test_dataset_loading_names_the_file_the_frame_and_the_atoms(tmp_path):
    path = tmp_path / "frames.extxyz"
    frames = [molecule("H2O"), acetaldehyde_with_a_duplicate(), molecule("CH4")]
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(DatasetFormatError, match=rf"{path}, frame 1 \(line 6\): C2H5O: atoms 4 \(H\) and 7 \(H\) "
                                                  "are at the same position"):
        ASEDataset(path, energy_key=None, forces_key=None, stress_key=None, cache=False)
    crystals = tmp_path / "crystals.extxyz"
    ase.io.write(crystals, [bulk("Cu", "fcc", a=3.6), crystal_with_an_image_coincidence()], format="extxyz")
    with pytest.raises(DatasetFormatError, match=rf"{crystals}, frame 1 \(line 4\): Cu8: atoms 2 \(Cu\) and 5 \(Cu\) "
                                                  "coincide through the periodic cell"):
        ASEDataset(crystals, energy_key=None, forces_key=None, stress_key=None, cache=False)
