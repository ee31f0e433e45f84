"""`ASEDataset`: energies, forces and stress from extxyz, ASE db and trajectory files; splits."""

from __future__ import annotations

import re

import ase.io
import ase.units
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.loader import DataLoader

from geognn.data import ASEDataset, DatasetFormatError, keys
from geognn.data.collated import split_sizes
from geognn.data.units import KCAL_PER_MOL_TO_EV

FORMATS = ["extxyz", "db", "traj"]


def _labelled(atoms, rng, stress: bool = False):
    """Attach a random energy, forces (and stress) through a SinglePointCalculator."""
    results = {"energy": float(rng.normal(scale=10.0)), "forces": rng.normal(size=(len(atoms), 3))}
    if stress:
        # distinct entries, so that any mix-up of the Voigt order shows
        results["stress"] = rng.normal(scale=0.01, size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _molecules(rng):
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    water = molecule("H2O")
    ammonia = molecule("NH3")
    ammonia.rattle(0.02, seed=2)
    return [_labelled(a, rng) for a in (ethanol, water, ammonia)]


def _crystals(rng, stress: bool = True):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=3)
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.05, seed=4)
    return [_labelled(a, rng, stress=stress) for a in (cu, si)]


def _write(tmp_path, name, frames, fmt="extxyz"):
    path = tmp_path / f"{name}.{fmt}"
    ase.io.write(path, frames)
    return path


def _check_against(dataset, frames, *, exact: bool, with_stress: bool):
    """Compare every item of ``dataset`` with the labelled ``frames``."""
    assert len(dataset) == len(frames)

    def same(actual, expected):
        actual = actual.numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
        if exact:
            np.testing.assert_array_equal(actual, expected)
        else:
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-8)

    for data, atoms in zip(dataset, frames):
        assert data[keys.ATOMIC_NUMBERS].tolist() == atoms.numbers.tolist()
        same(data[keys.POSITIONS], atoms.positions)
        if atoms.pbc.any():
            same(data[keys.CELL][0], atoms.cell[:])
            assert data[keys.PBC].tolist() == [atoms.pbc.tolist()]
        else:
            assert keys.CELL not in data and keys.PBC not in data
        results = atoms.calc.results
        assert data[keys.ENERGY].dtype == torch.float64 and data[keys.ENERGY].shape == (1,)
        same(data[keys.ENERGY], [results["energy"]])
        assert data[keys.FORCES].shape == (len(atoms), 3)
        same(data[keys.FORCES], results["forces"])
        if with_stress:
            assert data[keys.STRESS].shape == (1, 3, 3)
            stress = np.asarray(results["stress"])
            full = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
            same(data[keys.STRESS][0], full)
        else:
            assert keys.STRESS not in data


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_molecules(tmp_path, fmt):
    frames = _molecules(np.random.default_rng(0))
    path = _write(tmp_path, "molecules", frames, fmt)
    dataset = ASEDataset(path, dtype=torch.float64)
    assert dataset.labels == frozenset({keys.ENERGY, keys.FORCES})
    # identical to what ASE itself reads from the same file
    _check_against(dataset, ase.io.read(path, ":"), exact=True, with_stress=False)
    # and to the values written (extxyz rounds positions and forces to 8 decimals)
    _check_against(dataset, frames, exact=fmt != "extxyz", with_stress=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_periodic_with_stress(tmp_path, fmt):
    frames = _crystals(np.random.default_rng(1))
    path = _write(tmp_path, "crystals", frames, fmt)
    dataset = ASEDataset(path, dtype=torch.float64)
    assert dataset.labels == frozenset({keys.ENERGY, keys.FORCES, keys.STRESS})
    _check_against(dataset, ase.io.read(path, ":"), exact=True, with_stress=True)
    _check_against(dataset, frames, exact=fmt != "extxyz", with_stress=True)


@pytest.mark.parametrize("fmt", ["db", "traj"])
def test_voigt_order(tmp_path, fmt):
    # .db and .traj keep ASE's Voigt vector (xx, yy, zz, yz, xz, xy) as it is
    atoms = bulk("Si", "diamond", a=5.43)
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)), stress=voigt)
    path = _write(tmp_path, "si", [atoms], fmt)
    stress = ASEDataset(path, dtype=torch.float64)[0][keys.STRESS][0].numpy()
    np.testing.assert_array_equal(stress, voigt_6_to_full_3x3_stress(voigt))
    assert stress[1, 2] == stress[2, 1] == 4.0  # yz
    assert stress[0, 2] == stress[2, 0] == 5.0  # xz
    assert stress[0, 1] == stress[1, 0] == 6.0  # xy


def test_dtypes_and_batching(tmp_path):
    frames = _crystals(np.random.default_rng(2)) * 2
    dataset = ASEDataset(_write(tmp_path, "crystals", frames), dtype=torch.float32)
    item = dataset[0]
    assert item[keys.POSITIONS].dtype == torch.float32 and item[keys.FORCES].dtype == torch.float32
    assert item[keys.STRESS].dtype == torch.float32 and item[keys.CELL].dtype == torch.float32
    assert item[keys.ENERGY].dtype == torch.float64  # energies stay float64 whatever dtype is
    loader = DataLoader(dataset, batch_size=3, shuffle=False)
    batch = next(iter(loader))
    sizes = [len(a) for a in frames[:3]]
    assert batch.num_graphs == 3
    assert batch[keys.ENERGY].shape == (3,) and batch[keys.ENERGY].dtype == torch.float64
    np.testing.assert_array_equal(batch[keys.ENERGY].numpy(), [a.calc.results["energy"] for a in frames[:3]])
    assert batch[keys.FORCES].shape == (sum(sizes), 3)
    assert batch[keys.STRESS].shape == (3, 3, 3)
    assert batch[keys.CELL].shape == (3, 3, 3) and batch[keys.PBC].shape == (3, 3)
    assert batch.batch.tolist() == sum(([b] * n for b, n in enumerate(sizes)), [])


def test_labels_under_custom_names(tmp_path):
    rng = np.random.default_rng(3)
    frames, energies, forces = [], [], []
    for name in ("H2O", "CH4", "CH3OH"):
        atoms = molecule(name)
        energies.append(float(rng.normal()))
        forces.append(rng.normal(size=(len(atoms), 3)))
        atoms.info["REF_energy"] = energies[-1]
        atoms.arrays["REF_forces"] = forces[-1]
        frames.append(atoms)
    path = _write(tmp_path, "ref", frames)
    # default names find nothing: the labels stay in info/arrays, not in a calculator
    unlabelled = ASEDataset(path)
    assert unlabelled.labels == frozenset()
    assert keys.ENERGY not in unlabelled[0] and keys.FORCES not in unlabelled[0]
    dataset = ASEDataset(path, energy_key="REF_energy", forces_key="REF_forces", dtype=torch.float64)
    assert dataset.labels == frozenset({keys.ENERGY, keys.FORCES})
    for data, energy, force in zip(dataset, energies, forces):
        np.testing.assert_allclose(data[keys.ENERGY].numpy(), [energy], rtol=1e-12)
        np.testing.assert_allclose(data[keys.FORCES].numpy(), force, rtol=0, atol=1e-8)


def test_stress_under_custom_names(tmp_path):
    # a 6-entry (Voigt) and a 9-entry (full, not symmetric) stress in info
    voigt = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    full = np.arange(9.0).reshape(3, 3) / 10.0
    frames = []
    for stress in (voigt, full):
        atoms = bulk("Cu", "fcc", a=3.6)
        atoms.info["REF_energy"] = -3.0
        atoms.info["REF_stress"] = stress
        frames.append(atoms)
    path = _write(tmp_path, "stress", frames)
    dataset = ASEDataset(path, energy_key="REF_energy", forces_key=None, stress_key="REF_stress", dtype=torch.float64)
    assert dataset.labels == frozenset({keys.ENERGY, keys.STRESS})
    np.testing.assert_allclose(dataset[0][keys.STRESS][0].numpy(), voigt_6_to_full_3x3_stress(voigt), rtol=1e-12)
    np.testing.assert_allclose(dataset[1][keys.STRESS][0].numpy(), full, rtol=1e-12)


def test_label_key_none_skips_the_label(tmp_path):
    path = _write(tmp_path, "crystals", _crystals(np.random.default_rng(4)))
    dataset = ASEDataset(path, stress_key=None, forces_key=None)
    assert dataset.labels == frozenset({keys.ENERGY})
    assert keys.STRESS not in dataset[0] and keys.FORCES not in dataset[0]


def test_energy_unit_scales_energy_forces_and_stress(tmp_path):
    frames = _crystals(np.random.default_rng(5))
    path = _write(tmp_path, "crystals", frames, "traj")
    ev = ASEDataset(path, dtype=torch.float64)
    kcal = ASEDataset(path, energy_unit="kcal/mol", dtype=torch.float64)
    reference = ase.units.kcal / ase.units.mol  # an independent value of 1 kcal/mol in eV
    assert KCAL_PER_MOL_TO_EV == pytest.approx(reference, rel=1e-6)
    for a, b, atoms in zip(ev, kcal, frames):
        results = atoms.calc.results
        np.testing.assert_allclose(b[keys.ENERGY].numpy(), [results["energy"] * reference], rtol=1e-6)
        np.testing.assert_allclose(b[keys.FORCES].numpy(), results["forces"] * reference, rtol=1e-6)
        # exactly the library's factor, for all three labels
        np.testing.assert_allclose(b[keys.ENERGY].numpy(), a[keys.ENERGY].numpy() * KCAL_PER_MOL_TO_EV, rtol=1e-15)
        np.testing.assert_allclose(b[keys.FORCES].numpy(), a[keys.FORCES].numpy() * KCAL_PER_MOL_TO_EV, rtol=1e-15)
        np.testing.assert_allclose(b[keys.STRESS].numpy(), a[keys.STRESS].numpy() * KCAL_PER_MOL_TO_EV, rtol=1e-15)
        # positions and cells are lengths: untouched
        np.testing.assert_array_equal(b[keys.POSITIONS].numpy(), a[keys.POSITIONS].numpy())
        np.testing.assert_array_equal(b[keys.CELL].numpy(), a[keys.CELL].numpy())


def test_unknown_energy_unit(tmp_path):
    path = _write(tmp_path, "molecules", _molecules(np.random.default_rng(6)))
    with pytest.raises(ValueError, match="kcal/mol"):
        ASEDataset(path, energy_unit="kcal")


def test_mixed_periodic_and_molecules_batch(tmp_path):
    rng = np.random.default_rng(7)
    molecules, crystals = _molecules(rng), _crystals(rng, stress=False)
    frames = [molecules[0], crystals[0], molecules[1], crystals[1]]
    path = _write(tmp_path, "mixed", frames)
    dataset = ASEDataset(path, dtype=torch.float64)
    for data, atoms in zip(dataset, frames):
        assert data[keys.CELL].shape == (1, 3, 3) and data[keys.PBC].shape == (1, 3)
        if atoms.pbc.any():
            np.testing.assert_array_equal(data[keys.CELL][0].numpy(), atoms.cell[:])
            assert data[keys.PBC].tolist() == [[True, True, True]]
        else:
            assert not bool(data[keys.CELL].any())
            assert data[keys.PBC].tolist() == [[False, False, False]]
    batch = next(iter(DataLoader(dataset, batch_size=4, shuffle=False)))
    assert batch[keys.CELL].shape == (4, 3, 3) and batch[keys.PBC].shape == (4, 3)
    assert batch[keys.PBC].all(dim=1).tolist() == [False, True, False, True]
    assert batch[keys.ENERGY].shape == (4,)
    assert batch[keys.POSITIONS].shape == (sum(len(a) for a in frames), 3)


def test_multiple_files_and_index(tmp_path):
    rng = np.random.default_rng(8)
    first, second = _molecules(rng), _molecules(rng)
    paths = [_write(tmp_path, "first", first), _write(tmp_path, "second", second, "traj")]
    energies = [a.calc.results["energy"] for a in first + second]

    def read_energies(dataset):
        return [float(d[keys.ENERGY]) for d in dataset]

    assert read_energies(ASEDataset(paths, dtype=torch.float64)) == pytest.approx(energies, abs=0, rel=1e-15)
    reverse = ASEDataset(paths[::-1], dtype=torch.float64)
    assert read_energies(reverse) == pytest.approx(energies[3:] + energies[:3], abs=0, rel=1e-15)
    # index applies to every file
    assert read_energies(ASEDataset(paths, index=1)) == pytest.approx([energies[1], energies[4]], rel=1e-15)
    assert read_energies(ASEDataset(paths, index="1:")) == pytest.approx(energies[1:3] + energies[4:], rel=1e-15)
    assert read_energies(ASEDataset(paths[0], index=slice(None, None, 2))) == pytest.approx(
        [energies[0], energies[2]], rel=1e-15
    )
    assert read_energies(ASEDataset(paths[1], index=-1)) == pytest.approx([energies[5]], rel=1e-15)


# --------------------------------------------------------------------------- errors


def _four_molecule_file(tmp_path):
    rng = np.random.default_rng(9)
    frames = [_labelled(molecule(name), rng) for name in ("H2O", "CH4", "CH3OH", "NH3")]
    path = _write(tmp_path, "four", frames)
    lines = path.read_text().splitlines(keepends=True)
    # 1-based line number of frame 2's atom-count line: each frame is n + 2 lines
    frame2_line = 1 + sum(len(a) + 2 for a in frames[:2])
    assert lines[frame2_line - 1].strip() == str(len(frames[2]))
    return path, lines, frames, frame2_line


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_frame_names_file_frame_and_line(tmp_path, damage):
    path, lines, frames, frame2_line = _four_molecule_file(tmp_path)
    bad = tmp_path / f"{damage}.extxyz"
    if damage == "corrupt":  # a letter in frame 2's first atom line
        lines[frame2_line + 1] = lines[frame2_line + 1].replace(".", "x", 1)
        bad.write_text("".join(lines))
    else:  # frames 0 and 1 whole, frame 2 cut after its first two atoms
        bad.write_text("".join(lines[: frame2_line + 3]))
    with pytest.raises(DatasetFormatError, match=rf"{damage}\.extxyz, frame 2 \(line {frame2_line}\)"):
        ASEDataset(bad)


def test_truncated_last_frame(tmp_path):
    path, lines, frames, _ = _four_molecule_file(tmp_path)
    frame3_line = 1 + sum(len(a) + 2 for a in frames[:3])
    bad = tmp_path / "cut.extxyz"
    bad.write_text("".join(lines[: frame3_line + 2]))  # count, comment and one atom of NH3
    with pytest.raises(DatasetFormatError, match=rf"cut\.extxyz, frame 3 \(line {frame3_line}\)"):
        ASEDataset(bad)


def test_error_line_with_index_points_into_the_file(tmp_path):
    path, lines, frames, frame2_line = _four_molecule_file(tmp_path)
    lines[frame2_line + 1] = lines[frame2_line + 1].replace(".", "x", 1)
    bad = tmp_path / "corrupt.extxyz"
    bad.write_text("".join(lines))
    with pytest.raises(DatasetFormatError) as info:
        ASEDataset(bad, index="1:")
    # the reported line must be the failing frame's first line in the file
    assert re.search(rf"\bline {frame2_line}\b", str(info.value))


def test_corrupt_energy_in_comment_line_names_file_and_frame(tmp_path):
    path, lines, frames, frame2_line = _four_molecule_file(tmp_path)
    comment = lines[frame2_line]  # frame 2's comment line (1-based line frame2_line + 1)
    assert "energy=" in comment
    lines[frame2_line] = re.sub(r"energy=(\S+)", r"energy=\1x", comment)
    bad = tmp_path / "energy.extxyz"
    bad.write_text("".join(lines))
    with pytest.raises(DatasetFormatError, match=r"energy\.extxyz, frame 2\b"):
        ASEDataset(bad)


def test_plain_xyz_error_line(tmp_path):
    path = tmp_path / "plain.xyz"
    path.write_text("2\n\nH 0 0 0\nH 0 0 0.7\n3\ncomment\nO 0 0 0\nH 0 0 1\nH 0 1 y\n")
    with pytest.raises(DatasetFormatError, match=r"plain\.xyz, frame 1 \(line 5\)"):
        ASEDataset(path)


@pytest.mark.parametrize("suffix", ["traj", "db"])
def test_garbage_binary_file(tmp_path, suffix):
    path = tmp_path / f"garbage.{suffix}"
    path.write_bytes(b"not an ASE file " * 64)
    with pytest.raises(DatasetFormatError, match=rf"garbage\.{suffix}, frame 0"):
        ASEDataset(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.extxyz"
    path.write_text("")
    with pytest.raises(DatasetFormatError, match=r"empty\.extxyz"):
        ASEDataset(path)
    with pytest.raises(DatasetFormatError, match="no structures"):
        ASEDataset(path, format="extxyz")


def test_mixed_labels_are_masked(tmp_path):
    """A frame without forces among frames with them: zeros in its place and a mask that says so."""
    rng = np.random.default_rng(10)
    frames = _molecules(rng)
    water = molecule("H2O")
    water.calc = SinglePointCalculator(water, energy=-1.0)  # no forces
    frames.insert(2, water)
    path = _write(tmp_path, "gap", frames)
    dataset = ASEDataset(path, cache=False)
    assert dataset.label_counts == {keys.ENERGY: len(frames), keys.FORCES: len(frames) - 1}
    assert dataset.labels == frozenset({keys.ENERGY, keys.FORCES})
    masks = torch.cat([item[keys.LABEL_MASK] for item in dataset])
    assert masks[:, 0].all() and not masks[:, 2].any()
    assert masks[:, 1].tolist() == [k != 2 for k in range(len(frames))]
    assert torch.equal(dataset[2][keys.FORCES], torch.zeros(3, 3, dtype=dataset[2][keys.FORCES].dtype))
    assert torch.allclose(dataset[3][keys.FORCES].double(), torch.as_tensor(frames[3].get_forces()), atol=1e-6)
    # ignoring the forces: every frame carries the same labels, and no mask is added
    plain = ASEDataset(path, forces_key=None, cache=False)
    assert plain.labels == frozenset({keys.ENERGY}) and keys.LABEL_MASK not in plain[0]
    # the cache keeps the counts
    assert ASEDataset(path).label_counts == ASEDataset(path).label_counts == dataset.label_counts


def test_mixed_labels_across_files(tmp_path):
    rng = np.random.default_rng(11)
    good = _write(tmp_path, "good", _molecules(rng))
    water = molecule("H2O")
    water.calc = SinglePointCalculator(water, energy=-1.0)
    other = _write(tmp_path, "other", [water], "traj")
    dataset = ASEDataset([good, other], cache=False)
    assert dataset.label_counts[keys.FORCES] == len(dataset) - 1
    assert dataset[len(dataset) - 1][keys.LABEL_MASK].tolist() == [[True, False, False]]


def test_crystals_with_clusters_and_isolated_atoms(tmp_path, emt_crystals):
    """The EMT sample with clusters (no stress) and isolated atoms (set aside as references)."""
    frames = emt_crystals.make_frames(4, seed=3, clusters=2, isolated=True)
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, frames, format="extxyz")
    dataset = ASEDataset(path, cache=False)
    assert len(dataset) == 6
    assert dataset.label_counts == {keys.ENERGY: 6, keys.FORCES: 6, keys.STRESS: 4}
    assert dataset.isolated_atom_energies == {29: pytest.approx(frames[-2].get_potential_energy()),
                                              13: pytest.approx(frames[-1].get_potential_energy())}
    cluster = dataset[4]
    assert not cluster[keys.PBC].any() and torch.equal(cluster[keys.CELL], torch.zeros_like(cluster[keys.CELL]))
    assert cluster[keys.LABEL_MASK].tolist() == [[True, True, False]]
    # read as ordinary frames when asked
    assert len(ASEDataset(path, cache=False, isolated_atom_type=None)) == 8
    bad = frames[4].copy()  # a cluster marked as an isolated atom
    bad.info["config_type"] = "IsolatedAtom"
    ase.io.write(tmp_path / "bad.extxyz", [frames[0], bad], format="extxyz")
    with pytest.raises(DatasetFormatError, match=rf"bad\.extxyz, frame 1.*IsolatedAtom.*{len(bad)} atoms"):
        ASEDataset(tmp_path / "bad.extxyz", cache=False)


def test_missing_file(tmp_path):
    good = _write(tmp_path, "good", _molecules(np.random.default_rng(12)))
    with pytest.raises(FileNotFoundError, match="nothere.extxyz"):
        ASEDataset(tmp_path / "nothere.extxyz")
    with pytest.raises(FileNotFoundError, match="nothere.extxyz"):
        ASEDataset([good, tmp_path / "nothere.extxyz"])
    with pytest.raises(ValueError):
        ASEDataset([])


@pytest.mark.parametrize("label", ["forces", "energy"])
def test_nan_labels_raise(tmp_path, label):
    frames = _molecules(np.random.default_rng(13))
    results = frames[1].calc.results
    if label == "forces":
        results["forces"][2, 1] = np.nan
    else:
        results["energy"] = np.nan
    path = _write(tmp_path, "nan", frames, "traj")
    with pytest.raises(DatasetFormatError, match=rf"nan\.traj, frame 1.*{label}.*NaN"):
        ASEDataset(path)


def test_energy_must_be_one_number(tmp_path):
    atoms = molecule("H2O")
    atoms.info["REF_energy"] = np.array([1.0, 2.0])
    path = _write(tmp_path, "two", [atoms])
    with pytest.raises(DatasetFormatError, match=r"two\.extxyz, frame 0.*one number"):
        ASEDataset(path, energy_key="REF_energy")


def test_forces_in_info_are_not_per_atom(tmp_path):
    atoms = molecule("H2O")
    atoms.info["REF_energy"] = 1.0
    atoms.info["REF_forces"] = np.zeros(6)
    path = _write(tmp_path, "info", [atoms])
    # per-atom labels are looked up in arrays (or the calculator), never in info
    dataset = ASEDataset(path, energy_key="REF_energy", forces_key="REF_forces")
    assert dataset.labels == frozenset({keys.ENERGY})


@pytest.mark.parametrize("index", [slice(5, None), "10:", slice(0, 0)])
def test_empty_selection_raises(tmp_path, index):
    path = _write(tmp_path, "molecules", _molecules(np.random.default_rng(14)))
    with pytest.raises(DatasetFormatError, match="no structures"):
        ASEDataset(path, index=index)


@pytest.mark.parametrize("index", [3, -4, "7"])
def test_out_of_range_frame_index_names_the_file(tmp_path, index):
    path = _write(tmp_path, "molecules", _molecules(np.random.default_rng(14)))
    with pytest.raises(DatasetFormatError, match=r"molecules\.extxyz: index .* out of range; the file has 3 frames"):
        ASEDataset(path, index=index)


# --------------------------------------------------------------------------- splits


@pytest.fixture
def twenty(tmp_path):
    rng = np.random.default_rng(15)
    frames = [_labelled(molecule("H2O"), rng) for _ in range(20)]
    dataset = ASEDataset(_write(tmp_path, "twenty", frames, "traj"), dtype=torch.float64)
    energies = [float(d[keys.ENERGY]) for d in dataset]
    assert len(set(energies)) == 20  # energies identify the frames
    return dataset, {e: i for i, e in enumerate(energies)}


def _frame_ids(subset, lookup):
    return [lookup[float(d[keys.ENERGY])] for d in subset]


@pytest.mark.parametrize(
    "sizes,expected",
    [
        ((12, 5, None), [12, 5, 3]),
        ((10, 4), [10, 4]),
        ((0.5, 0.25, None), [10, 5, 5]),
        ((0.7, 0.2), [14, 4]),
        ((None, 3), [17, 3]),
    ],
)
def test_split_sizes_disjoint(twenty, sizes, expected):
    dataset, lookup = twenty
    parts = dataset.split(sizes, seed=1)
    assert [len(p) for p in parts] == expected
    ids = [_frame_ids(p, lookup) for p in parts]
    flat = [i for part in ids for i in part]
    assert len(set(flat)) == len(flat) == sum(expected)
    assert set(flat) <= set(range(20))
    if None in sizes:
        assert set(flat) == set(range(20))


def test_split_seed(twenty):
    dataset, lookup = twenty
    ids = lambda parts: [_frame_ids(p, lookup) for p in parts]  # noqa: E731
    assert ids(dataset.split((10, 5, None), seed=3)) == ids(dataset.split((10, 5, None), seed=3))
    assert ids(dataset.split((10, 5, None), seed=3)) != ids(dataset.split((10, 5, None), seed=4))


def test_split_of_a_split(twenty):
    dataset, lookup = twenty
    train, test = dataset.split((15, None), seed=0)
    inner = train.split((10, None), seed=0)
    inner_ids = [set(_frame_ids(p, lookup)) for p in inner]
    assert inner_ids[0] | inner_ids[1] == set(_frame_ids(train, lookup))
    assert not (inner_ids[0] | inner_ids[1]) & set(_frame_ids(test, lookup))


def test_split_too_large(twenty):
    dataset, _ = twenty
    with pytest.raises(ValueError, match=r"\b20\b"):
        dataset.split((15, 10))


def test_split_sizes_edge_cases():
    with pytest.raises(ValueError, match="None"):
        split_sizes(10, (None, None))
    with pytest.raises(ValueError, match="non-negative"):
        split_sizes(10, (-1, None))
    with pytest.raises(ValueError, match="fraction"):
        split_sizes(10, (0.6, 0.5))
    with pytest.raises(ValueError, match="fraction"):
        split_sizes(10, (0.5, 3))  # mixed fractions and counts
    with pytest.raises(ValueError):
        split_sizes(10, ())
    with pytest.raises(ValueError, match="unknown split"):
        split_sizes(10, "nosuchsplit")
    with pytest.raises(TypeError):
        split_sizes(10, (True, None))
    assert split_sizes(130831, "dimenet") == [110000, 10000, 130831 - 120000]
    assert split_sizes(130831, "dimenet") == [110000, 10000, 10831]
    with pytest.raises(ValueError, match="130"):
        split_sizes(130, "dimenet")
    assert split_sizes(10, (0.3, 0.3, None)) == [3, 3, 4]
    assert split_sizes(10, (10, 0)) == [10, 0]


# ---- the processed cache ----

def _frames_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x.keys()) == sorted(y.keys())
        for key in x.keys():
            assert torch.equal(x[key], y[key]), key


def test_cache_is_written_then_read_without_parsing(tmp_path, monkeypatch):
    """The first load parses the file and writes collated tensors under processed/; the second
    reads them (ASE's reader is not called) and gives the same items and labels."""
    rng = np.random.default_rng(0)
    path = _write(tmp_path, "crystals", _crystals(rng))
    first = ASEDataset(path)
    assert first.cache_path.parent == tmp_path / "processed" and first.cache_path.exists()

    def no_parsing(*args, **kwargs):
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(ase.io, "iread", no_parsing)
    second = ASEDataset(path)
    _frames_equal(first, second)
    assert second.labels == first.labels == frozenset({keys.ENERGY, keys.FORCES, keys.STRESS})
    assert torch.equal(next(iter(DataLoader(second, batch_size=3))).pos, next(iter(DataLoader(first, batch_size=3))).pos)


def test_cache_follows_the_file_and_the_options(tmp_path):
    """A changed file or option gives another cache (the stale one of the same file is removed);
    cache=False writes nothing; an unwritable folder only warns."""
    rng = np.random.default_rng(1)
    frames = _molecules(rng)
    path = _write(tmp_path, "molecules", frames)
    old = ASEDataset(path).cache_path
    in_kcal = ASEDataset(path, energy_unit="kcal/mol")
    assert in_kcal.cache_path != old and old.exists()
    assert float(in_kcal[0].energy) == pytest.approx(float(ASEDataset(path)[0].energy) * KCAL_PER_MOL_TO_EV)

    ase.io.write(path, frames[:-1], format="extxyz")  # the file changes
    changed = ASEDataset(path, energy_unit="kcal/mol")
    assert len(changed) == len(frames) - 1 and changed.cache_path != in_kcal.cache_path
    assert not in_kcal.cache_path.exists() and not old.exists()

    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    plain = _write(plain_dir, "molecules", frames)
    assert ASEDataset(plain, cache=False).cache_path is None and not (plain_dir / "processed").exists()
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        dataset = ASEDataset(plain, cache=blocked)
    assert len(dataset) == len(frames)


def test_group_by_file_or_info_key(tmp_path):
    rng = np.random.default_rng(2)
    first, second = _write(tmp_path, "a", _molecules(rng)), _write(tmp_path, "b", _molecules(rng))
    dataset = ASEDataset([first, second], group_by="file", cache=False)
    assert dataset.structure_values(keys.GROUP).tolist() == [0] * 3 + [1] * 3
    frames = _molecules(rng)
    for number, atoms in enumerate(frames):
        atoms.info["mol"] = "water" if number % 2 else "methane"
    tagged = ASEDataset(_write(tmp_path, "c", frames), group_by="mol", cache=False)
    assert tagged.structure_values(keys.GROUP).tolist() == [0, 1, 0]
    with pytest.raises(DatasetFormatError, match="no 'molecule' in the frame's info"):
        ASEDataset(first, group_by="molecule", cache=False)


def _relabelled_crystals(rng):
    """Crystals carrying two sets of labels (the calculator's and REF_* ones, all different) and a
    per-frame info tag, so that every loading option changes what is read."""
    frames = _crystals(rng) + _crystals(rng)
    for number, atoms in enumerate(frames):
        atoms.info["REF_energy"] = float(rng.normal(scale=10.0))
        atoms.info["REF_stress"] = rng.normal(scale=0.01, size=6)
        atoms.arrays["REF_forces"] = rng.normal(size=(len(atoms), 3))
        atoms.info["mol"] = "even" if number % 2 == 0 else "odd"
    return frames


# Each entry changes one option that changes the frames; loaded in turn into one cache folder.
_CONTENT_OPTIONS = [
    {},
    {"energy_key": "REF_energy"},
    {"forces_key": "REF_forces"},
    {"stress_key": "REF_stress"},
    {"stress_key": None},
    {"forces_key": None},
    {"dtype": torch.float32},
    {"dtype": torch.float64},
    {"energy_unit": "kcal/mol"},
    {"energy_unit": "Hartree", "dtype": torch.float32},
    {"index": ":2"},
    {"index": "1:"},
    {"index": -1},
    {"group_by": "mol"},
    {"group_by": "file"},
    {"format": "xyz"},  # plain xyz: the same file read without its labels
    {"format": "traj"},
]


def _assert_same_content(cached, reference):
    assert len(cached) == len(reference) and cached.labels == reference.labels
    for x, y in zip(cached, reference):
        assert sorted(x.keys()) == sorted(y.keys())
        for key in x.keys():
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


def test_the_cache_never_returns_another_options_content(tmp_path, monkeypatch):
    """Every option that changes the frames (label keys, dtype, unit, index, group_by, format)
    gets its own content from one shared cache folder, whatever was loaded before, in either
    order; a repeated option is a cache hit."""
    frames = _relabelled_crystals(np.random.default_rng(5))
    extxyz = _write(tmp_path, "crystals", frames)
    traj = tmp_path / "crystals_traj"
    ase.io.write(traj, frames, format="traj")  # no suffix: only format= says how to read it
    folder = tmp_path / "cache"
    references = []
    for options in _CONTENT_OPTIONS:
        path = traj if options.get("format") == "traj" else extxyz
        references.append((path, ASEDataset(path, cache=False, **options)))
    # The options really differ in content, so that a shared cache would show.
    for (_, a), (_, b) in zip(references, references[1:]):
        with pytest.raises(AssertionError):
            _assert_same_content(a, b)
    for order in (range(len(_CONTENT_OPTIONS)), reversed(range(len(_CONTENT_OPTIONS)))):
        for k in order:
            path, reference = references[k]
            _assert_same_content(ASEDataset(path, cache=folder, **_CONTENT_OPTIONS[k]), reference)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(ase.io, "iread", no_parsing)
    for (path, reference), options in zip(references, _CONTENT_OPTIONS):
        _assert_same_content(ASEDataset(path, cache=folder, **options), reference)


def test_every_content_option_is_part_of_the_cache_key():
    """A new constructor argument is keyed unless it is known not to change the frames."""
    import inspect

    not_content = {"self", "paths", "transform", "progress", "cache"}
    arguments = set(inspect.signature(ASEDataset.__init__).parameters) - not_content
    names = {"index", "format", "energy_key", "forces_key", "stress_key", "energy_unit", "dtype", "group_by",
             "isolated_atom_type"}
    assert arguments == names, "a new ASEDataset option: add it to the cache key and to _CONTENT_OPTIONS"


def test_the_cache_follows_the_contents_not_the_time_stamp(tmp_path):
    """A file edited in place with the same size and modification time (a restored backup,
    `cp -p`) is read again; the same contents in a moved file reuse the cache."""
    import os

    rng = np.random.default_rng(6)
    frames = _molecules(rng)
    path = _write(tmp_path, "molecules", frames)
    folder = tmp_path / "cache"
    first = ASEDataset(path, cache=folder)
    stamp = path.stat()
    text = path.read_text()
    energy = f"{frames[0].calc.results['energy']:.8f}"[:6]
    assert text.count(energy) == 1
    swapped = energy[:-1] + ("1" if energy[-1] != "1" else "2")
    path.write_text(text.replace(energy, swapped))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert path.stat().st_size == stamp.st_size and path.stat().st_mtime_ns == stamp.st_mtime_ns
    edited = ASEDataset(path, cache=folder)
    assert edited.cache_path != first.cache_path
    _assert_same_content(edited, ASEDataset(path, cache=False))
    assert float(edited[0].energy) != float(first[0].energy)

    moved = tmp_path / "elsewhere" / path.name
    moved.parent.mkdir()
    os.replace(path, moved)
    assert ASEDataset(moved, cache=folder).cache_path == edited.cache_path


def test_a_cache_whose_stored_key_differs_is_not_used(tmp_path):
    """The file name holds short digests; the full key stored inside is compared as well, so a
    colliding or hand-copied cache file is rebuilt rather than trusted."""
    rng = np.random.default_rng(7)
    frames = _molecules(rng)
    path = _write(tmp_path, "molecules", frames)
    folder = tmp_path / "cache"
    in_ev = ASEDataset(path, cache=folder)
    in_kcal = ASEDataset(path, cache=folder, energy_unit="kcal/mol")
    import shutil

    shutil.copyfile(in_kcal.cache_path, in_ev.cache_path)  # the eV name now holds the kcal/mol content
    _assert_same_content(ASEDataset(path, cache=folder), ASEDataset(path, cache=False))


def test_isolated_atom_option_is_part_of_the_cache_key(tmp_path, emt_crystals):
    path = tmp_path / "with_atoms.extxyz"
    ase.io.write(path, emt_crystals.make_frames(2, seed=4, isolated=True), format="extxyz")
    folder = tmp_path / "cache"
    aside = ASEDataset(path, cache=folder)
    kept = ASEDataset(path, cache=folder, isolated_atom_type=None)
    again = ASEDataset(path, cache=folder)
    assert (len(aside), len(kept), len(again)) == (2, 4, 2)
    assert again.isolated_atom_energies == aside.isolated_atom_energies and len(aside.isolated_atom_energies) == 2
    assert kept.isolated_atom_energies == {}
