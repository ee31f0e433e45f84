"""`atoms_to_data`: ase.Atoms -> PyG Data in geognn's conventions, and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from geognn.data import MAX_ATOMIC_NUMBER, atoms_to_data, keys
from geognn.data import atoms as atoms_module
from geognn.data.atoms import COINCIDENT_DISTANCE
from geognn.graph import periodic_radius_graph


@pytest.fixture(autouse=True)
def _default_float32():
    # the default dtype is the documented fallback; make sure no other test leaked a change
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


def test_molecule():
    atoms = molecule("CH3CHO")
    data = atoms_to_data(atoms)
    assert set(data.keys()) == {keys.ATOMIC_NUMBERS, keys.POSITIONS}
    assert keys.CELL not in data and keys.PBC not in data
    z, pos = data[keys.ATOMIC_NUMBERS], data[keys.POSITIONS]
    assert z.dtype == torch.long and z.shape == (7,)
    assert z.tolist() == atoms.numbers.tolist()
    assert sorted(z.tolist()) == [1, 1, 1, 1, 6, 6, 8]
    assert pos.shape == (7, 3) and pos.dtype == torch.float32
    np.testing.assert_allclose(pos.numpy(), atoms.positions, rtol=1e-6, atol=1e-6)
    assert data.num_nodes == 7


def test_molecule_with_a_cell_but_no_pbc_has_no_cell():
    atoms = molecule("H2O")
    atoms.center(vacuum=3.0)
    assert atoms.cell.volume > 0 and not atoms.pbc.any()
    data = atoms_to_data(atoms)
    assert keys.CELL not in data and keys.PBC not in data


def test_dtype():
    atoms = bulk("Si", "diamond", a=5.43)
    default = atoms_to_data(atoms)
    assert default[keys.POSITIONS].dtype == torch.float32 and default[keys.CELL].dtype == torch.float32
    double = atoms_to_data(atoms, dtype=torch.float64)
    assert double[keys.POSITIONS].dtype == torch.float64 and double[keys.CELL].dtype == torch.float64
    # float64 is exact
    assert np.array_equal(double[keys.POSITIONS].numpy(), atoms.positions)
    assert np.array_equal(double[keys.CELL][0].numpy(), atoms.cell[:])
    assert double[keys.ATOMIC_NUMBERS].dtype == torch.long and double[keys.PBC].dtype == torch.bool
    with pytest.raises(TypeError):
        atoms_to_data(atoms, dtype=torch.int64)


def test_default_dtype_is_followed():
    torch.set_default_dtype(torch.float64)
    data = atoms_to_data(molecule("CH4"))
    assert data[keys.POSITIONS].dtype == torch.float64


def test_periodic_cell():
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    # Outside the cell: positions are not wrapped. (Not by 1.5 cell vectors: that lands atom 0 on an
    # image of atom 1, which atoms_to_data refuses.)
    atoms.positions[0] += atoms.cell[0] * 1.25
    data = atoms_to_data(atoms, dtype=torch.float64)
    cell, pbc = data[keys.CELL], data[keys.PBC]
    assert cell.shape == (1, 3, 3) and pbc.shape == (1, 3)
    assert pbc.dtype == torch.bool and pbc.tolist() == [[True, True, True]]
    np.testing.assert_array_equal(cell[0].numpy(), atoms.cell[:])  # lattice vectors as rows
    np.testing.assert_array_equal(data[keys.POSITIONS].numpy(), atoms.positions)


def test_mixed_pbc_slab():
    slab = fcc111("Al", size=(2, 2, 3), vacuum=5.0)
    assert slab.pbc.tolist() == [True, True, False]
    data = atoms_to_data(slab, dtype=torch.float64)
    assert data[keys.PBC].tolist() == [[True, True, False]]
    np.testing.assert_array_equal(data[keys.CELL][0].numpy(), slab.cell[:])


def test_mixed_pbc_with_zero_nonperiodic_vector():
    atoms = Atoms(
        "Cu2",
        positions=[[0.0, 0.0, 0.0], [1.3, 1.3, 7.0]],
        cell=[[2.6, 0.0, 0.0], [1.3, 2.25, 0.0], [0.0, 0.0, 0.0]],
        pbc=[True, True, False],
    )
    data = atoms_to_data(atoms, dtype=torch.float64)
    assert data[keys.PBC].tolist() == [[True, True, False]]
    assert data[keys.CELL].shape == (1, 3, 3)
    assert not bool(data[keys.CELL][0, 2].any())
    # the data goes straight into the periodic graph
    edge_index, edge_shift = periodic_radius_graph(data.pos, 3.0, data.cell, data.pbc)
    assert edge_index.shape[1] > 0 and not bool(edge_shift[:, 2].any())


def _two_molecules():
    return [molecule("CH3CHO"), molecule("H2O")]


def _two_crystals():
    si = bulk("Si", "diamond", a=5.43)
    slab = fcc111("Al", size=(1, 1, 3), vacuum=4.0)
    slab.cell[2] = 0.0  # zero vector along the non-periodic direction
    return [si, slab]


def test_batch_molecules():
    mols = _two_molecules()
    batch = Batch.from_data_list([atoms_to_data(a) for a in mols])
    assert batch.num_graphs == 2
    assert batch.batch.tolist() == [0] * 7 + [1] * 3
    assert batch.ptr.tolist() == [0, 7, 10]
    assert batch[keys.POSITIONS].shape == (10, 3)
    assert batch[keys.ATOMIC_NUMBERS].tolist() == mols[0].numbers.tolist() + mols[1].numbers.tolist()
    assert keys.CELL not in batch and keys.PBC not in batch


def test_batch_crystals():
    crystals = _two_crystals()
    batch = Batch.from_data_list([atoms_to_data(a, dtype=torch.float64) for a in crystals])
    assert batch.batch.tolist() == [0, 0, 1, 1, 1]
    assert batch[keys.CELL].shape == (2, 3, 3)
    assert batch[keys.PBC].shape == (2, 3)
    assert batch[keys.PBC].tolist() == [[True, True, True], [True, True, False]]
    for b, atoms in enumerate(crystals):
        np.testing.assert_array_equal(batch[keys.CELL][b].numpy(), atoms.cell[:])
    # the batch works as input to the periodic graph, one cell per structure
    edge_index, _ = periodic_radius_graph(batch.pos, 3.0, batch.cell, batch.pbc, batch=batch.batch)
    assert bool((batch.batch[edge_index[0]] == batch.batch[edge_index[1]]).all())
    assert set(batch.batch[edge_index[1]].tolist()) == {0, 1}


@pytest.mark.parametrize("make", [_two_molecules, _two_crystals])
def test_dataloader(make):
    structures = make() * 2
    loader = DataLoader([atoms_to_data(a) for a in structures], batch_size=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    sizes = [len(a) for a in structures[:2]]
    for batch in batches:
        assert batch.num_graphs == 2
        assert batch.batch.tolist() == [0] * sizes[0] + [1] * sizes[1]
        if structures[0].pbc.any():
            assert batch[keys.CELL].shape == (2, 3, 3)
            assert batch[keys.PBC].shape == (2, 3)
        else:
            assert keys.CELL not in batch


# --------------------------------------------------------------------------- bad input


def test_empty_atoms_raise():
    with pytest.raises(ValueError, match="empty"):
        atoms_to_data(Atoms())


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_position_raises(value):
    atoms = molecule("H2O")
    atoms.positions[1, 2] = value
    with pytest.raises(ValueError, match=r"NaN or inf.*\[1\]"):
        atoms_to_data(atoms)


@pytest.mark.parametrize(
    "numbers",
    [
        [0],
        [8, 1, 0],
        [-1],
        [MAX_ATOMIC_NUMBER + 1],
    ],
)
def test_bad_atomic_numbers_raise(numbers):
    atoms = Atoms(numbers=numbers, positions=np.arange(3 * len(numbers), dtype=float).reshape(-1, 3))
    with pytest.raises(ValueError, match="atomic numbers must lie in 1..118"):
        atoms_to_data(atoms)


def test_placeholder_atom_raises():
    atoms = molecule("H2O") + Atoms("X", positions=[[0.0, 0.0, 3.0]])
    with pytest.raises(ValueError, match="'X' atom"):
        atoms_to_data(atoms)


def test_heaviest_element_is_fine():
    data = atoms_to_data(Atoms(numbers=[1, MAX_ATOMIC_NUMBER], positions=[[0, 0, 0], [0, 0, 2.0]]))
    assert data[keys.ATOMIC_NUMBERS].tolist() == [1, MAX_ATOMIC_NUMBER]


@pytest.mark.parametrize(
    "cell,pbc",
    [
        ([[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]], True),  # zero volume
        ([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]], True),  # coplanar
        (np.zeros((3, 3)), True),  # ASE's default cell with pbc=True
        ([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]], [True, True, True]),
        ([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]], [True, True, False]),  # zero vector along a periodic direction
    ],
)
def test_degenerate_periodic_cell_raises(cell, pbc):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=cell, pbc=pbc)
    with pytest.raises(ValueError, match="zero or linearly dependent"):
        atoms_to_data(atoms)


# --------------------------------------------------------------------------- coincident atoms


@pytest.fixture(params=["every pair", "neighbour search"])
def check_path(request, monkeypatch):
    """Small structures are checked by comparing every pair, large ones through a neighbour
    search; lowering the size limit sends these small ones the second way."""
    if request.param == "neighbour search":
        monkeypatch.setattr(atoms_module, "_DENSE_ATOMS", 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coincidence_threshold(check_path, dtype):
    """Refused below COINCIDENT_DISTANCE (1e-4 Å), kept above it, whichever way it is looked for."""
    for gap, refused in ((0.0, True), (0.4 * COINCIDENT_DISTANCE, True), (3 * COINCIDENT_DISTANCE, False),
                         (0.1, False)):
        atoms = Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96, gap, 0.0]])
        if refused:
            with pytest.raises(ValueError, match=r"H2O: atoms 1 \(H\) and 2 \(H\) are at the same position "
                                                 r"\(0.9600, 0.0000, 0.0000; .* Å apart\).*closer than 0.0001 Å"):
                atoms_to_data(atoms, dtype=dtype)
        else:
            atoms_to_data(atoms, dtype=dtype)


def test_coincidence_through_images_respects_pbc(check_path):
    cell = [[3.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.0, 0.4, 3.0]]
    atoms = Atoms("CO", positions=[[0.1, 0.2, 0.3], [0.1 + 3.5, 0.2 + 3.0, 0.3]], cell=cell, pbc=True)  # + a + b
    with pytest.raises(ValueError, match=r"atoms 0 \(C\) and 1 \(O\) coincide through the periodic cell: "
                                         r"atom 1 shifted by \[-1, -1, 0\] cell vectors lies on atom 0"):
        atoms_to_data(atoms)
    atoms.pbc = [True, False, True]  # b is not a lattice vector any more: 3 Å apart
    atoms_to_data(atoms)
    atoms.pbc = False
    atoms_to_data(atoms)


def test_an_atom_on_its_own_image(check_path):
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=[[2e-5, 0, 0], [0, 3.0, 0], [0, 0, 3.0]], pbc=True)
    with pytest.raises(ValueError, match=r"cell vector 0 is 2.0e-05 Å long, so atom 0 \(Cu\) coincides with its own"):
        atoms_to_data(atoms)
    atoms.pbc = [False, True, True]  # a short vector along a non-periodic direction is no lattice vector
    atoms_to_data(atoms)


def test_both_ways_of_looking_agree_on_random_cells(monkeypatch):
    """Triclinic cells, mixed pbc, atoms outside the cell: every pair compared and the neighbour
    search name the same pair (the lowest indices) with the same lattice shift, and both let the
    structure through once that pair is moved 0.01 Å apart."""
    rng = np.random.default_rng(0)
    for trial in range(12):
        pbc = rng.random(3) < 0.7
        cell = np.diag(rng.uniform(2.5, 6.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3))
        atoms = Atoms(numbers=rng.integers(1, 10, 12), cell=cell, pbc=pbc,
                      scaled_positions=rng.uniform(-1.5, 2.5, (12, 3)))
        i, j = sorted(rng.choice(12, 2, replace=False).tolist())
        shift = rng.integers(-2, 3, 3) * pbc
        atoms.positions[j] = atoms.positions[i] - shift @ atoms.cell[:]
        messages = []
        for limit in (64, 0):
            monkeypatch.setattr(atoms_module, "_DENSE_ATOMS", limit)
            with pytest.raises(ValueError) as error:
                atoms_to_data(atoms, dtype=torch.float64)
            messages.append(str(error.value))
        assert messages[0] == messages[1], trial
        assert f"atoms {i} (" in messages[0] and f"and {j} (" in messages[0], (trial, messages[0])
        if shift.any():
            assert f"shifted by {shift.tolist()} cell vectors" in messages[0], (trial, messages[0])
        atoms.positions[j] += [0.01, 0.0, 0.0]
        for limit in (64, 0):
            monkeypatch.setattr(atoms_module, "_DENSE_ATOMS", limit)
            atoms_to_data(atoms, dtype=torch.float64)


def test_a_large_crystal_is_searched_not_compared_pairwise(monkeypatch):
    """Past the size limit the pairs come from the neighbour search (an all-pairs comparison of
    N atoms would hold N² distances)."""
    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat((6, 6, 6))  # 1,728 atoms
    crystal.positions[1000] = crystal.positions[3] + crystal.cell[2]

    def pairwise(*args):
        raise AssertionError("compared every pair of a large structure")

    monkeypatch.setattr(atoms_module, "_close_pairs_dense", pairwise)
    with pytest.raises(ValueError, match=r"Si1728: atoms 3 \(Si\) and 1000 \(Si\) coincide through the periodic cell: "
                                         r"atom 1000 shifted by \[0, 0, -1\] cell vectors"):
        atoms_to_data(crystal)
    crystal.positions[1000] += [0.5, 0.5, 0.5]
    atoms_to_data(crystal)  # (then 0.9 Å from atom 3: kept)
