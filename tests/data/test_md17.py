"""`MD17`: sGDML MD17 and rMD17 ``.npz`` trajectories, rMD17's official splits, bad files."""

from __future__ import annotations

import re

import ase.units
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from torch_geometric.loader import DataLoader

from geognn.data import MD17, DatasetFormatError, keys

NUM_FRAMES = 20

# 1 kcal/mol in eV from ASE's CODATA 2018 constants, independent of geognn.data.units
_UNITS_2018 = ase.units.create_units("2018")
KCAL_MOL = _UNITS_2018["kcal"] / _UNITS_2018["mol"]


@pytest.fixture(scope="module")
def trajectory():
    """Rattled ethanol with EMT energies (eV) and forces (eV/Å)."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = EMT()
    rng = np.random.default_rng(0)
    reference = atoms.positions.copy()
    positions, energies, forces = [], [], []
    for _ in range(NUM_FRAMES):
        atoms.positions = reference + rng.normal(scale=0.05, size=reference.shape)
        positions.append(atoms.positions.copy())
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces().copy())
    energies = np.array(energies)
    assert len(set(energies.tolist())) == NUM_FRAMES  # energies identify the frames
    return {
        "z": atoms.numbers.copy(),
        "pos": np.array(positions),
        "energy": energies,
        "forces": np.array(forces),
    }


def _md17_arrays(traj):
    return {
        "R": traj["pos"],
        "z": traj["z"].astype(np.uint8),  # as in the sGDML files
        "E": (traj["energy"] / KCAL_MOL).reshape(-1, 1),
        "F": traj["forces"] / KCAL_MOL,
        "name": np.array("ethanol"),
        "theory": np.array("EMT (test)"),
        "type": np.array("d"),
        "md5": np.array("0123456789abcdef"),
    }


def _rmd17_arrays(traj):
    return {
        "coords": traj["pos"],
        "nuclear_charges": traj["z"].astype(np.int64),
        "energies": traj["energy"] / KCAL_MOL,
        "forces": traj["forces"] / KCAL_MOL,
        "old_indices": np.arange(NUM_FRAMES) * 7,
        "old_energies": traj["energy"] / KCAL_MOL + 1.0,
        "old_forces": traj["forces"] / KCAL_MOL * 2.0,
    }


MAKERS = {"md17": _md17_arrays, "rmd17": _rmd17_arrays}


def _save(path, arrays):
    np.savez(path, **arrays)
    assert path.exists()
    return path


@pytest.fixture(params=["md17", "rmd17"])
def npz(request, tmp_path, trajectory):
    layout = request.param
    return layout, _save(tmp_path / f"{layout}_ethanol.npz", MAKERS[layout](trajectory))


def test_load_both_layouts(npz, trajectory):
    layout, path = npz
    dataset = MD17(path, dtype=torch.float64)
    assert dataset.layout == layout
    assert len(dataset) == NUM_FRAMES
    n = len(trajectory["z"])
    for f, data in enumerate(dataset):
        assert data[keys.ATOMIC_NUMBERS].dtype == torch.long
        assert data[keys.ATOMIC_NUMBERS].tolist() == trajectory["z"].tolist()
        np.testing.assert_array_equal(data[keys.POSITIONS].numpy(), trajectory["pos"][f])
        assert data[keys.ENERGY].shape == (1,) and data[keys.ENERGY].dtype == torch.float64
        # kcal/mol -> eV with the library's constant gives back the EMT values
        np.testing.assert_allclose(data[keys.ENERGY].numpy(), [trajectory["energy"][f]], rtol=1e-9)
        assert data[keys.FORCES].shape == (n, 3)
        np.testing.assert_allclose(data[keys.FORCES].numpy(), trajectory["forces"][f], rtol=1e-9, atol=1e-12)
        assert keys.CELL not in data


def test_rmd17_ignores_old_arrays(tmp_path, trajectory):
    arrays = _rmd17_arrays(trajectory)
    path = _save(tmp_path / "rmd17.npz", arrays)
    dataset = MD17(path, dtype=torch.float64)
    energies = torch.cat([d[keys.ENERGY] for d in dataset]).numpy()
    np.testing.assert_allclose(energies, trajectory["energy"], rtol=1e-9)
    assert not np.allclose(energies, arrays["old_energies"] * KCAL_MOL)


def test_default_dtype_and_energy_unit(tmp_path, trajectory):
    path = _save(tmp_path / "md17.npz", _md17_arrays(trajectory))
    data = MD17(path)[3]
    assert data[keys.POSITIONS].dtype == torch.get_default_dtype()
    assert data[keys.FORCES].dtype == torch.get_default_dtype()
    assert data[keys.ENERGY].dtype == torch.float64
    # energy_unit="eV": the numbers are taken as they are
    raw = MD17(path, energy_unit="eV", dtype=torch.float64)[3]
    np.testing.assert_array_equal(raw[keys.ENERGY].numpy(), [trajectory["energy"][3] / KCAL_MOL])
    np.testing.assert_array_equal(raw[keys.FORCES].numpy(), trajectory["forces"][3] / KCAL_MOL)
    with pytest.raises(ValueError, match="unknown energy unit"):
        MD17(path, energy_unit="kcal")


def test_batching(npz, trajectory):
    _, path = npz
    dataset = MD17(path, dtype=torch.float64)
    n = len(trajectory["z"])
    batches = list(DataLoader(dataset, batch_size=8, shuffle=False))
    assert [b.num_graphs for b in batches] == [8, 8, 4]
    batch = batches[1]
    assert batch[keys.ENERGY].shape == (8,) and batch[keys.ENERGY].dtype == torch.float64
    assert batch[keys.FORCES].shape == (8 * n, 3)
    assert batch[keys.POSITIONS].shape == (8 * n, 3)
    assert batch.batch.tolist() == np.repeat(np.arange(8), n).tolist()
    np.testing.assert_allclose(batch[keys.ENERGY].numpy(), trajectory["energy"][8:16], rtol=1e-9)
    np.testing.assert_allclose(batch[keys.FORCES].numpy(), trajectory["forces"][8:16].reshape(-1, 3), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(batch[keys.POSITIONS].numpy(), trajectory["pos"][8:16].reshape(-1, 3))


# --------------------------------------------------------------------------- official splits


def _write_split(folder, part, fold, lines):
    folder.mkdir(exist_ok=True)
    path = folder / f"index_{part}_0{fold}.csv"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.mark.parametrize("fold", [1, 3, 5])
def test_official_split(tmp_path, trajectory, fold):
    dataset = MD17(_save(tmp_path / "rmd17.npz", _rmd17_arrays(trajectory)), dtype=torch.float64)
    splits = tmp_path / "splits"
    train_index, test_index = [3, 17, 0, 5, 11, 19], [1, 2, 18]
    _write_split(splits, "train", fold, train_index)
    _write_split(splits, "test", fold, test_index)
    # other folds hold other indices; the right files must be read
    for other in {1, 3, 5} - {fold}:
        _write_split(splits, "train", other, [4])
        _write_split(splits, "test", other, [6])
    train, test = dataset.official_split(splits, fold=fold)
    for subset, index in ((train, train_index), (test, test_index)):
        assert len(subset) == len(index)
        energies = torch.cat([d[keys.ENERGY] for d in subset]).numpy()
        np.testing.assert_allclose(energies, trajectory["energy"][index], rtol=1e-9)
        positions = torch.cat([d[keys.POSITIONS] for d in subset]).numpy()
        np.testing.assert_array_equal(positions, trajectory["pos"][index].reshape(-1, 3))


def test_official_split_ignores_blank_lines(tmp_path, trajectory):
    dataset = MD17(_save(tmp_path / "rmd17.npz", _rmd17_arrays(trajectory)), dtype=torch.float64)
    splits = tmp_path / "splits"
    _write_split(splits, "train", 1, ["7", "", " 2 ", "9"])
    _write_split(splits, "test", 1, ["0"])
    train, test = dataset.official_split(splits)
    energies = torch.cat([d[keys.ENERGY] for d in train]).numpy()
    np.testing.assert_allclose(energies, trajectory["energy"][[7, 2, 9]], rtol=1e-9)
    assert len(test) == 1


@pytest.mark.parametrize(
    "lines,bad_line,match",
    [
        (["1", "2", str(NUM_FRAMES)], 3, "outside"),
        (["1", "-1"], 2, "outside"),
        (["0", "", "3", "abc"], 4, "not a frame index"),
        (["4.5", "2"], 1, "not a frame index"),
    ],
)
def test_official_split_bad_index_file(tmp_path, trajectory, lines, bad_line, match):
    dataset = MD17(_save(tmp_path / "rmd17.npz", _rmd17_arrays(trajectory)))
    splits = tmp_path / "splits"
    _write_split(splits, "train", 2, lines)
    _write_split(splits, "test", 2, ["0"])
    with pytest.raises(DatasetFormatError, match=match) as info:
        dataset.official_split(splits, fold=2)
    assert re.search(rf"index_train_02\.csv, line {bad_line}\b", str(info.value))


@pytest.mark.parametrize("fold", [0, 6, -1, True, 1.0, "1"])
def test_official_split_bad_fold(tmp_path, trajectory, fold):
    dataset = MD17(_save(tmp_path / "rmd17.npz", _rmd17_arrays(trajectory)))
    with pytest.raises(ValueError, match="folds 1..5"):
        dataset.official_split(tmp_path, fold=fold)


def test_official_split_missing_file(tmp_path, trajectory):
    dataset = MD17(_save(tmp_path / "rmd17.npz", _rmd17_arrays(trajectory)))
    _write_split(tmp_path / "splits", "train", 1, ["0"])
    with pytest.raises(FileNotFoundError, match="index_test_01.csv"):
        dataset.official_split(tmp_path / "splits", fold=1)


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        MD17(tmp_path / "nothere.npz")


def test_unrelated_arrays(tmp_path):
    path = _save(tmp_path / "other.npz", {"positions": np.zeros((2, 3, 3)), "labels": np.zeros(2)})
    with pytest.raises(DatasetFormatError) as info:
        MD17(path)
    message = str(info.value)
    assert "other.npz" in message
    assert "positions" in message and "labels" in message  # what it found
    assert "nuclear_charges" in message  # and what it expected


def test_partial_layout_is_not_accepted(tmp_path, trajectory):
    arrays = _md17_arrays(trajectory)
    del arrays["F"]
    with pytest.raises(DatasetFormatError, match="expected MD17"):
        MD17(_save(tmp_path / "noforces.npz", arrays))


@pytest.mark.parametrize("keep", [0.5, 0.9, 10, 0])
def test_truncated_npz(tmp_path, trajectory, keep):
    good = _save(tmp_path / "good.npz", _md17_arrays(trajectory))
    data = good.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:size])
    with pytest.raises(DatasetFormatError, match=r"truncated\.npz"):
        MD17(bad)


def test_object_arrays_are_refused(tmp_path, trajectory):
    arrays = _md17_arrays(trajectory)
    arrays["z"] = np.array(list(trajectory["z"]), dtype=object)
    with pytest.raises(DatasetFormatError, match=r"objects\.npz"):
        MD17(_save(tmp_path / "objects.npz", arrays))


@pytest.mark.parametrize(
    "layout,name,change,match",
    [
        ("md17", "F", lambda a: a[:, :-1], "'F' has shape"),
        ("md17", "F", lambda a: a[:-1], "'F' has shape"),
        ("rmd17", "forces", lambda a: a.transpose(1, 0, 2), "'forces' has shape"),
        ("md17", "E", lambda a: a[:-1], "'E' has shape"),
        ("md17", "E", lambda a: np.repeat(a, 2, axis=1), "'E' has shape"),
        ("rmd17", "energies", lambda a: a.reshape(1, 1, -1), "'energies' has shape"),
        ("md17", "z", lambda a: a[:-1], "'z' must be"),
        ("md17", "z", lambda a: a.astype(np.float64), "'z' must be"),
        ("rmd17", "nuclear_charges", lambda a: np.where(a == 8, 0, a), "atomic numbers"),
        ("md17", "R", lambda a: a[0], "'R' must have shape"),
        ("md17", "R", lambda a: a[:, :, :2], "'R' must have shape"),
        ("md17", "R", lambda a: a[:0], "'R' must have shape"),
    ],
)
def test_inconsistent_shapes(tmp_path, trajectory, layout, name, change, match):
    arrays = MAKERS[layout](trajectory)
    arrays[name] = change(arrays[name])
    with pytest.raises(DatasetFormatError, match=match) as info:
        MD17(_save(tmp_path / "bad.npz", arrays))
    assert "bad.npz" in str(info.value)


@pytest.mark.parametrize("name", ["R", "E", "F"])
def test_non_finite_values(tmp_path, trajectory, name):
    arrays = _md17_arrays(trajectory)
    arrays[name] = arrays[name].copy()
    arrays[name].reshape(-1)[5] = np.nan
    with pytest.raises(DatasetFormatError, match=rf"'{name}' contains NaN"):
        MD17(_save(tmp_path / "nan.npz", arrays))
