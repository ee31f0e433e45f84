"""`geognn.data.stats`: element reference energies, neighbour counts and force scale."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from geognn.data import ASEDataset, atoms_to_data, keys
from geognn.data.stats import avg_num_neighbors, energy_residuals, fit_element_energies, force_rms

NAMES = ["H2O", "CH4", "NH3", "CH3OH", "C2H6", "HCN", "CH3CH2OH", "CH3CN"]
# chosen per-element energies (eV) for H, C, N, O
CHOSEN = {1: -13.6, 6: -1029.4, 7: -1484.2, 8: -2041.9}


def _composition(structures, num_elements):
    """Element counts built with numpy from the atoms themselves."""
    return np.stack([np.bincount(a.numbers, minlength=num_elements) for a in structures]).astype(np.float64)


def _exact_energy(atoms):
    return sum(CHOSEN[int(z)] for z in atoms.numbers)


def _data_list(structures, energies, forces=None):
    items = []
    for i, (atoms, energy) in enumerate(zip(structures, energies)):
        data = atoms_to_data(atoms, dtype=torch.float64)
        data[keys.ENERGY] = torch.tensor([energy], dtype=torch.float64)
        if forces is not None:
            data[keys.FORCES] = torch.as_tensor(forces[i])
        items.append(data)
    return items


@pytest.fixture
def molecules():
    return [molecule(name) for name in NAMES]


def test_recovers_chosen_element_energies_from_extxyz(tmp_path, molecules):
    for atoms in molecules:
        atoms.calc = SinglePointCalculator(atoms, energy=_exact_energy(atoms))
    path = tmp_path / "molecules.extxyz"
    ase.io.write(path, molecules)
    dataset = ASEDataset(path, dtype=torch.float64)
    for batch_size in (1024, 3):  # one batch, and several
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the compositions determine every e_Z: no warning
            fitted = fit_element_energies(dataset, batch_size=batch_size)
        assert fitted.dtype == torch.float64 and fitted.shape == (9,)  # up to O
        for z, energy in CHOSEN.items():
            assert float(fitted[z]) == pytest.approx(energy, abs=1e-8)
        # absent elements (and index 0) get exactly 0
        assert fitted[[0, 2, 3, 4, 5]].tolist() == [0.0] * 5


def test_recovers_chosen_element_energies_from_a_list(molecules):
    items = _data_list(molecules, [_exact_energy(a) for a in molecules])
    fitted = fit_element_energies(items, max_atomic_number=20)
    assert fitted.shape == (21,)
    expected = np.zeros(21)
    for z, energy in CHOSEN.items():
        expected[z] = energy
    np.testing.assert_allclose(fitted.numpy(), expected, rtol=0, atol=1e-8)


def test_least_squares_with_noise(molecules):
    rng = np.random.default_rng(0)
    energies = np.array([_exact_energy(a) for a in molecules]) + rng.normal(scale=0.5, size=len(molecules))
    items = _data_list(molecules, energies)
    fitted = fit_element_energies(items, batch_size=5).numpy()
    counts = _composition(molecules, 9)
    present = [1, 6, 7, 8]
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    np.testing.assert_allclose(fitted[present], solution, rtol=1e-10)
    assert fitted[[0, 2, 3, 4, 5]].tolist() == [0.0] * 5
    # the noise moves the answer away from the chosen values
    assert not np.allclose(fitted[present], [CHOSEN[z] for z in present], atol=1e-3)
    # normal equations: the residual is orthogonal to every composition column
    residual = energies - counts @ fitted
    np.testing.assert_allclose(counts[:, present].T @ residual, 0.0, atol=1e-8)


def test_single_composition_reproduces_the_mean():
    # one molecule's trajectory: compositions are all the same, e_Z are not determined
    rng = np.random.default_rng(1)
    atoms = molecule("CH3CH2OH")
    energies = -4200.0 + rng.normal(scale=0.3, size=12)
    structures = []
    for _ in energies:
        frame = atoms.copy()
        frame.rattle(0.05, seed=int(rng.integers(1 << 30)))
        structures.append(frame)
    with pytest.warns(UserWarning, match="minimum-norm"):
        fitted = fit_element_energies(_data_list(structures, energies)).numpy()
    counts = np.bincount(atoms.numbers, minlength=fitted.shape[0]).astype(np.float64)
    assert counts @ fitted == pytest.approx(energies.mean(), abs=1e-8)
    # documented: the minimum-norm solution, i.e. proportional to the counts
    np.testing.assert_allclose(fitted, counts * energies.mean() / (counts @ counts), rtol=1e-10, atol=1e-12)
    residuals = energy_residuals(_data_list(structures, energies), torch.from_numpy(fitted)).numpy()
    np.testing.assert_allclose(residuals, energies - energies.mean(), atol=1e-8)


def test_fit_errors(molecules):
    items = _data_list(molecules, [_exact_energy(a) for a in molecules])
    with pytest.raises(ValueError, match="Z=8"):
        fit_element_energies(items, max_atomic_number=7)
    assert fit_element_energies(items, max_atomic_number=8).shape == (9,)
    with pytest.raises(KeyError, match="nope"):
        fit_element_energies(items, energy_key="nope")
    unlabelled = [atoms_to_data(a) for a in molecules]
    with pytest.raises(KeyError, match="energy"):
        fit_element_energies(unlabelled)
    with pytest.raises(ValueError, match="empty"):
        fit_element_energies([])


def test_energy_residuals(molecules):
    rng = np.random.default_rng(2)
    energies = rng.normal(scale=100.0, size=len(molecules))
    references = torch.from_numpy(rng.normal(size=10))
    residuals = energy_residuals(_data_list(molecules, energies), references, batch_size=3)
    assert residuals.dtype == torch.float64 and residuals.shape == (len(molecules),)
    expected = energies - _composition(molecules, 10) @ references.numpy()
    np.testing.assert_allclose(residuals.numpy(), expected, rtol=1e-12, atol=1e-12)
    # residuals of the fitted references are the least-squares residuals
    fitted = fit_element_energies(_data_list(molecules, energies))
    residuals = energy_residuals(_data_list(molecules, energies), fitted).numpy()
    counts = _composition(molecules, 9)[:, [1, 6, 7, 8]]
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    np.testing.assert_allclose(residuals, energies - counts @ solution, atol=1e-8)


# --------------------------------------------------------------------------- neighbours


def _brute_force_pairs(atoms, cutoff):
    distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return int((distances < cutoff).sum())


def _crystals():
    si = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))
    si.rattle(0.05, seed=5)
    cu = bulk("Cu", "fcc", a=3.6)  # one atom: every neighbour is an image of itself
    cu.rattle(0.05, seed=6)
    tri = bulk("Al", "fcc", a=4.05, cubic=True)
    tri.set_cell(tri.cell[:] + [[0, 0, 0], [0.8, 0, 0], [0.3, 0.5, 0]], scale_atoms=True)  # triclinic
    tri.rattle(0.05, seed=7)
    tri.positions[1] += 1.5 * tri.cell[0] - tri.cell[2]  # outside the cell: positions are not wrapped
    slab = fcc111("Al", size=(2, 2, 3), vacuum=5.0)  # periodic along x and y only
    slab.rattle(0.05, seed=8)
    return [si, cu, tri, slab]


@pytest.mark.parametrize("cutoff", [1.3, 2.5, 5.0])
def test_avg_num_neighbors_molecules(molecules, cutoff):
    for i, atoms in enumerate(molecules):
        atoms.rattle(0.02, seed=i)
    items = [atoms_to_data(a, dtype=torch.float64) for a in molecules]
    expected = sum(_brute_force_pairs(a, cutoff) for a in molecules) / sum(len(a) for a in molecules)
    assert expected > 0
    for batch_size in (256, 3):
        assert avg_num_neighbors(items, cutoff, batch_size=batch_size) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cutoff", [3.0, 4.5, 6.5])
def test_avg_num_neighbors_periodic(cutoff):
    crystals = _crystals()
    items = [atoms_to_data(a, dtype=torch.float64) for a in crystals]
    expected = sum(len(neighbor_list("i", a, cutoff)) for a in crystals) / sum(len(a) for a in crystals)
    for batch_size in (256, 1):
        assert avg_num_neighbors(items, cutoff, batch_size=batch_size) == pytest.approx(expected, rel=1e-12)
    # one crystal alone, against ASE's per-atom count
    for atoms, item in zip(crystals, items):
        assert avg_num_neighbors([item], cutoff) == pytest.approx(len(neighbor_list("i", atoms, cutoff)) / len(atoms))


def test_avg_num_neighbors_mixed_file(tmp_path, molecules):
    # molecules and crystals in one file: the molecules get a zero cell and pbc False
    crystals = _crystals()
    frames = molecules[:3] + crystals + molecules[3:]
    for atoms in frames:
        atoms.info.pop("adsorbate_info", None)  # fcc111's, which extxyz cannot store
        atoms.calc = SinglePointCalculator(atoms, energy=0.0)
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, frames)
    dataset = ASEDataset(path, dtype=torch.float64)
    assert keys.CELL in dataset[0]
    cutoff = 3.5
    counts = [len(neighbor_list("i", a, cutoff)) if a.pbc.any() else _brute_force_pairs(a, cutoff) for a in frames]
    expected = sum(counts) / sum(len(a) for a in frames)
    assert avg_num_neighbors(dataset, cutoff, batch_size=4) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- forces


def test_force_rms(molecules):
    rng = np.random.default_rng(3)
    forces = [rng.normal(scale=1.0 + i, size=(len(a), 3)) for i, a in enumerate(molecules)]
    items = _data_list(molecules, np.zeros(len(molecules)), forces)
    expected = np.sqrt(np.mean(np.concatenate(forces) ** 2))
    # the mean is over all components, not over per-structure means
    per_structure = np.sqrt(np.mean([np.mean(f**2) for f in forces]))
    assert abs(expected - per_structure) > 1e-3
    for batch_size in (1024, 3):
        assert force_rms(items, batch_size=batch_size) == pytest.approx(expected, rel=1e-12)


def test_force_rms_from_file(tmp_path, molecules):
    rng = np.random.default_rng(4)
    forces = [rng.normal(size=(len(a), 3)) for a in molecules]
    for atoms, f in zip(molecules, forces):
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=f)
    path = tmp_path / "forces.traj"
    ase.io.write(path, molecules)
    # kcal/mol scales the forces, and so the RMS
    dataset = ASEDataset(path, energy_unit="kcal/mol", dtype=torch.float64)
    from geognn.data.units import KCAL_PER_MOL_TO_EV

    expected = np.sqrt(np.mean(np.concatenate(forces) ** 2)) * KCAL_PER_MOL_TO_EV
    assert force_rms(dataset) == pytest.approx(expected, rel=1e-12)


def test_force_rms_errors(molecules):
    items = _data_list(molecules, np.zeros(len(molecules)))
    with pytest.raises(KeyError, match="forces"):
        force_rms(items)
    with pytest.raises(ValueError, match="empty"):
        force_rms([])
