"""QM9 from qm9pack and from the original .xyz files: counts, units, caching, errors."""

import csv
import importlib.util
import os
import re
import shutil
import tarfile
from pathlib import Path

import ase.units
import pytest
import torch
from torch_geometric.loader import DataLoader

from geognn.data import QM9, QM9FormatError, keys
from geognn.data import qm9 as qm9_module
from geognn.data import qm9_sources
from geognn.data.qm9 import ALL_TARGETS, ATOM_REFERENCE_HARTREE, TARGETS, UNITS, read_qm9pack

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "qm9_xyz"
HAVE_QM9PACK = importlib.util.find_spec("qm9pack") is not None
needs_qm9pack = pytest.mark.skipif(not HAVE_QM9PACK, reason="qm9pack is not installed (pip install 'geognn[qm9]')")

# ase.units.Hartree is CODATA 2014; geognn uses CODATA 2018. They agree to 1e-8.
HARTREE = ase.units.Hartree


@pytest.fixture(scope="module")
def full_qm9(tmp_path_factory):
    if not HAVE_QM9PACK:
        pytest.skip("qm9pack is not installed")
    return QM9(tmp_path_factory.mktemp("qm9"), target="U0", progress=False)


@pytest.fixture
def sample_dir(tmp_path):
    target = tmp_path / "xyz"
    shutil.copytree(SAMPLES, target)
    return target


# ---------------------------------------------------------------- full set (qm9pack)


@needs_qm9pack
def test_full_set_size_elements_and_methane(full_qm9):
    assert len(full_qm9) == 130_831
    methane = full_qm9[0]
    assert int(methane.idx) == 1
    assert methane.z.tolist() == [6, 1, 1, 1, 1]
    assert methane.energy.dtype == torch.float64
    expected = -40.47893 * HARTREE
    assert abs(methane.energy.item() - expected) <= 1e-6 * abs(expected)
    storage = full_qm9._data
    assert set(storage.z.unique().tolist()) == {1, 6, 7, 8, 9}
    assert torch.isfinite(storage.pos).all() and torch.isfinite(storage.y).all()
    sizes = full_qm9.slices["z"].diff()
    assert int(sizes.min()) == 3 and int(sizes.max()) == 29  # water .. the largest QM9 molecules
    # Molecule indices are unique, increasing, and skip the 3,054 uncharacterised ones.
    index = storage.idx
    assert bool((index.diff() > 0).all()) and int(index[-1]) == 133_885


@needs_qm9pack
def test_full_set_units_and_atomization(full_qm9):
    methane = full_qm9[0].y[0]
    column = {name: k for k, name in enumerate(ALL_TARGETS)}
    assert methane[column["mu"]].item() == 0.0  # Debye, unconverted
    assert methane[column["alpha"]].item() == pytest.approx(13.21)  # Bohr^3, unconverted
    assert methane[column["homo"]].item() == pytest.approx(-0.3877 * HARTREE, rel=1e-7)
    assert methane[column["gap"]].item() == pytest.approx(0.5048 * HARTREE, rel=1e-7)
    assert methane[column["Cv"]].item() == pytest.approx(6.469)
    atomization = (-40.47893 - (-37.846772 + 4 * -0.500273)) * HARTREE
    assert methane[column["U0_atom"]].item() == pytest.approx(atomization, rel=1e-7)
    # For every molecule: X_atom = X - sum of the atom references, and gap = lumo - homo.
    y, z = full_qm9._data.y, full_qm9._data.z
    molecule = torch.repeat_interleave(torch.arange(len(full_qm9)), full_qm9.slices["z"].diff())
    for name in ("U0", "U", "H", "G"):
        per_atom = QM9.atom_reference(name)[z]
        references = torch.zeros(len(full_qm9), dtype=torch.float64).index_add_(0, molecule, per_atom)
        torch.testing.assert_close(y[:, column[name + "_atom"]], y[:, column[name]] - references, rtol=0, atol=1e-8)
    # The source rounds to 1e-4 Hartree; gap = lumo - homo holds to that precision.
    assert float((y[:, column["gap"]] - (y[:, column["lumo"]] - y[:, column["homo"]])).abs().max()) < 2e-4 * HARTREE


@needs_qm9pack
def test_second_load_reads_the_cache(full_qm9, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(qm9_module, "read_qm9pack", fail)
    again = QM9(full_qm9.root, target="gap", progress=False)
    assert len(again) == len(full_qm9)
    torch.testing.assert_close(again._data.pos, full_qm9._data.pos)
    torch.testing.assert_close(again._data.energy, full_qm9._data.y[:, ALL_TARGETS.index("gap")])


@needs_qm9pack
def test_dimenet_split_and_subset(full_qm9):
    train, val, test = full_qm9.split("dimenet", seed=42)
    assert (len(train), len(val), len(test)) == (110_000, 10_000, 10_831)
    ids = [set(part._data.idx[torch.tensor(part.indices())].tolist()) for part in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 130_831
    again = full_qm9.split("dimenet", seed=42)[2]
    assert again.indices() == test.indices()
    assert full_qm9.split("dimenet", seed=1)[2].indices() != test.indices()
    small = QM9(full_qm9.root, subset=1000, seed=3, progress=False)
    assert len(small) == 1000 and small.indices() == sorted(small.indices())
    assert QM9(full_qm9.root, subset=1000, seed=3, progress=False).indices() == small.indices()
    assert QM9(full_qm9.root, subset=1000, seed=4, progress=False).indices() != small.indices()
    parts = small.split((800, 100, None))
    assert [len(p) for p in parts] == [800, 100, 100]


@needs_qm9pack
def test_sample_files_agree_with_qm9pack(full_qm9, tmp_path):
    sample = QM9(tmp_path, source=SAMPLES, progress=False)
    position = {int(i): k for k, i in enumerate(full_qm9._data.idx.tolist())}
    for item in sample:
        reference = full_qm9[position[int(item.idx)]]
        assert torch.equal(item.z, reference.z)
        assert torch.equal(item.pos, reference.pos)
        assert torch.equal(item.y, reference.y)


def test_missing_qm9pack_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"geognn\[qm9\]"):
        QM9(tmp_path, progress=False)


# ---------------------------------------------------------------- original .xyz files


def test_xyz_folder_parses_every_field(sample_dir, tmp_path):
    dataset = QM9(tmp_path / "root", source=sample_dir, target="homo", progress=False)
    assert len(dataset) == len(list(SAMPLES.glob("*.xyz")))
    by_index = {int(item.idx): item for item in dataset}
    # Molecule 4 (acetylene) written independently from the QM9 paper's layout.
    acetylene = by_index[4]
    assert acetylene.z.tolist() == [6, 6, 1, 1]
    assert acetylene.pos[:, 0].tolist() == pytest.approx([0.5995394918, -0.5995394918, -1.6616385861, 1.6616385861])
    assert acetylene.energy.item() == pytest.approx(-0.2845 * HARTREE, rel=1e-7)
    assert acetylene.y[0, TARGETS.index("U0")].item() == pytest.approx(-77.308427 * HARTREE, rel=1e-7)
    assert acetylene.y[0, TARGETS.index("Cv")].item() == pytest.approx(8.574)
    assert any(9 in item.z.tolist() for item in dataset)  # the fluorine molecule
    loader = DataLoader(dataset, batch_size=8)
    batch = next(iter(loader))
    assert batch.energy.shape == (8,) and batch.y.shape == (8, len(ALL_TARGETS))


def test_mathematica_exponents_and_dtype(sample_dir, tmp_path):
    path = sample_dir / "dsgdb9nsd_000001.xyz"
    lines = path.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[1] = "-1.26981359*^-2"  # QM9 writes some small numbers this way
    lines[2] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    dataset = QM9(tmp_path / "root", source=sample_dir, dtype=torch.float64, progress=False)
    assert dataset[0].pos.dtype == torch.float64
    assert dataset[0].pos[0, 0].item() == pytest.approx(-0.0126981359, abs=1e-15)


def test_tarball_equals_folder(sample_dir, tmp_path):
    tarball = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as archive:
        for path in sorted(sample_dir.glob("*.xyz"), reverse=True):  # order must not matter
            archive.add(path, arcname=path.name)
    from_folder = QM9(tmp_path / "a", source=sample_dir, progress=False)
    from_tar = QM9(tmp_path / "b", source=tarball, progress=False)
    for name in ("z", "pos", "y", "idx"):
        assert torch.equal(from_folder._data[name], from_tar._data[name])


def test_uncharacterized_list_drops_molecules(sample_dir, tmp_path):
    listing = sample_dir.parent / "uncharacterized.txt"
    listing.write_text("Index  dsgdb9nsd  SMILES\n 2  ...\n 5  ...\n")
    dataset = QM9(tmp_path / "root", source=sample_dir, progress=False)  # picks up the file next to the source
    kept = {int(item.idx) for item in dataset}
    assert 2 not in kept and 5 not in kept and {1, 3, 4} <= kept
    assert len(dataset) == len(list(SAMPLES.glob("*.xyz"))) - 2


def test_cache_is_invalidated_when_the_source_or_format_changes(sample_dir, tmp_path, monkeypatch):
    root = tmp_path / "root"
    first = QM9(root, source=sample_dir, progress=False)
    path = sample_dir / "dsgdb9nsd_000003.xyz"
    text = path.read_text().replace("-0.0343604951", "-0.0343604900")
    path.write_text(text)
    os.utime(path, ns=(1, 1))
    second = QM9(root, source=sample_dir, dtype=torch.float64, progress=False)
    assert second.cache_path != first.cache_path and not first.cache_path.exists()
    water = [item for item in second if int(item.idx) == 3][0]
    assert water.pos[0, 0].item() == pytest.approx(-0.03436049, abs=1e-12)
    calls = []
    real = qm9_module.read_qm9_xyz
    monkeypatch.setattr(qm9_module, "read_qm9_xyz", lambda *a, **k: calls.append(1) or real(*a, **k))
    QM9(root, source=sample_dir, progress=False)
    assert calls == []  # unchanged source: cache hit
    QM9(root, source=sample_dir, progress=False, force_reload=True)
    assert calls == [1]
    monkeypatch.setattr(qm9_module, "FORMAT_VERSION", qm9_module.FORMAT_VERSION + 1)
    newer = QM9(root, source=sample_dir, progress=False)
    assert calls == [1, 1] and newer.cache_path.name.endswith(f"_v{qm9_module.FORMAT_VERSION}.pt")


def test_bad_arguments(sample_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown QM9 target 'U00'"):
        QM9(tmp_path, source=sample_dir, target="U00")
    with pytest.raises(ValueError, match="subset"):
        QM9(tmp_path, source=sample_dir, subset=10_000, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QM9(tmp_path, source=tmp_path / "nowhere")
    dataset = QM9(tmp_path, source=sample_dir, target=None, progress=False)
    assert keys.ENERGY not in dataset[0]
    with pytest.raises(ValueError, match="has 31"):
        dataset.split((30, 5))


# ---------------------------------------------------------------- corrupt sources


def _rewrite_line(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def test_xyz_bad_number_names_file_and_line(sample_dir, tmp_path):
    path = sample_dir / "dsgdb9nsd_000002.xyz"
    _rewrite_line(path, 4, lambda text: text.replace("0.0125452063", "0.01254x2063"))
    with pytest.raises(QM9FormatError, match=r"dsgdb9nsd_000002\.xyz, line 4: coordinate is not a number"):
        QM9(tmp_path, source=sample_dir, progress=False)


def test_xyz_truncated_file_names_file_and_line(sample_dir, tmp_path):
    path = sample_dir / "dsgdb9nsd_000005.xyz"
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(QM9FormatError, match=r"dsgdb9nsd_000005\.xyz, line 3: file ends after 3 lines"):
        QM9(tmp_path, source=sample_dir, progress=False)
    path.write_text("")
    with pytest.raises(QM9FormatError, match=r"dsgdb9nsd_000005\.xyz, line 1: empty file"):
        QM9(tmp_path, source=sample_dir, progress=False)


def test_truncated_tarball_names_the_archive(sample_dir, tmp_path):
    tarball = tmp_path / "qm9.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as archive:
        for path in sorted(sample_dir.glob("*.xyz")):
            archive.add(path, arcname=path.name)
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    with pytest.raises(QM9FormatError, match=r"qm9\.tar\.bz2.*(corrupt|truncated|cannot open)"):
        QM9(tmp_path / "root", source=tarball, progress=False)


def _small_qm9pack(folder: Path) -> Path:
    """A qm9pack-layout folder with a few rows per part, from the sample .xyz files."""
    header = ["XYZ_file", "Index", "N_atoms", "Elements", "XYZ_Ang", *qm9_sources._QM9PACK_COLUMNS.values()]
    folder.mkdir()
    files = sorted(SAMPLES.glob("*.xyz"))
    for part, chunk in zip(qm9_sources._QM9PACK_FILES, (files[:4], files[4:7], files[7:9])):
        with open(folder / part, "w", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
            writer.writerow(header)
            for path in chunk:
                lines = path.read_text().splitlines()
                num = int(lines[0])
                props = lines[1].split()
                atoms = [line.split() for line in lines[2 : 2 + num]]
                elements = "[" + ",".join(f"'{a[0]}'" for a in atoms) + "]"
                xyz = "[" + ",".join("[" + ",".join(a[1:4]) + "]" for a in atoms) + "]"
                writer.writerow([path.name, props[1], num, elements, xyz, *props[5:17]])
    return folder


def test_qm9pack_reader_on_small_files(tmp_path):
    folder = _small_qm9pack(tmp_path / "pack")
    arrays = read_qm9pack(folder)
    assert arrays["index"].tolist()[:4] == [1, 2, 3, 4]
    assert arrays["props"].shape == (9, len(TARGETS))
    assert arrays["pos"].shape == (int(arrays["num_atoms"].sum()), 3)


@pytest.mark.parametrize(
    "part, damage, message",
    [
        # cut inside the last row's quoted coordinates
        ("qm9_part2.csv", lambda text: text[: text.rindex("[[") + 20], r"line \d+: .*truncated"),
        # ammonia's U0, on line 3
        ("qm9_part1.csv", lambda text: text.replace("-56.525887", "-56.52x887"),
         r"line 3: InternalEnergy_0K_au is not a number"),
    ],
)
def test_qm9pack_damaged_csv_names_file_and_line(tmp_path, part, damage, message):
    folder = _small_qm9pack(tmp_path / "pack")
    path = folder / part
    path.write_text(damage(path.read_text()))
    with pytest.raises(QM9FormatError, match=re.escape(part) + ", " + message):
        read_qm9pack(folder)


def test_qm9pack_atom_count_mismatch(tmp_path):
    folder = _small_qm9pack(tmp_path / "pack")
    path = folder / "qm9_part3.csv"
    lines = path.read_text().splitlines()
    fields = next(csv.reader([lines[1]]))
    fields[2] = str(int(fields[2]) + 1)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(next(csv.reader([lines[0]])))
        writer.writerow(fields)
    with pytest.raises(QM9FormatError, match=r"qm9_part3\.csv, line 2: molecule \d+ has N_atoms"):
        read_qm9pack(folder)


def test_units_table_covers_every_target():
    assert set(UNITS) == set(ALL_TARGETS)
    assert set(ATOM_REFERENCE_HARTREE) == {1, 6, 7, 8, 9}
    reference = QM9.atom_reference("G")
    assert reference[6].item() == pytest.approx(-37.861317 * HARTREE, rel=1e-7)
    with pytest.raises(ValueError, match="atom references"):
        QM9.atom_reference("mu")


def _contents(dataset):
    return {name: dataset._data[name].clone() for name in ("z", "pos", "y", "idx")}, list(dataset.indices())


def _assert_same(a, b):
    (tensors_a, indices_a), (tensors_b, indices_b) = a, b
    assert indices_a == indices_b
    for name in tensors_a:
        assert tensors_a[name].dtype == tensors_b[name].dtype and torch.equal(tensors_a[name], tensors_b[name]), name


def test_the_cache_follows_the_contents_of_the_source(sample_dir, tmp_path):
    """One root, loads in turn with every option that changes the content (the molecules kept by
    an uncharacterized list, dtype, subset, seed, target) and a source file edited in place with
    its size and time stamp kept: each load equals a fresh load into an empty root."""
    root = tmp_path / "root"
    first_list, second_list = tmp_path / "drop_2_5.txt", tmp_path / "drop_3.txt"
    first_list.write_text("Index  dsgdb9nsd  SMILES\n 2  ...\n 5  ...\n")
    second_list.write_text("Index  dsgdb9nsd  SMILES\n 3  ...\n")
    variants = [{}, {"uncharacterized": first_list}, {"uncharacterized": second_list}, {"dtype": torch.float64},
                {"dtype": torch.float32}, {"subset": 4}, {"subset": 4, "seed": 1}, {"target": "gap"},
                {"target": None}]
    fresh = [_contents(QM9(tmp_path / f"fresh{k}", source=sample_dir, progress=False, **options))
             for k, options in enumerate(variants)]
    for k, options in [*enumerate(variants), *reversed(list(enumerate(variants)))]:
        _assert_same(_contents(QM9(root, source=sample_dir, progress=False, **options)), fresh[k])

    path = sample_dir / "dsgdb9nsd_000003.xyz"
    stamp = path.stat()
    text = path.read_text()
    assert text.count("-0.0343604951") == 1
    path.write_text(text.replace("-0.0343604951", "-0.0343604900"))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert path.stat().st_size == stamp.st_size and path.stat().st_mtime_ns == stamp.st_mtime_ns
    edited = QM9(root, source=sample_dir, dtype=torch.float64, progress=False)
    water = [item for item in edited if int(item.idx) == 3][0]
    assert water.pos[0, 0].item() == pytest.approx(-0.03436049, abs=1e-12)
    _assert_same(_contents(edited), _contents(QM9(tmp_path / "fresh_edited", source=sample_dir,
                                                   dtype=torch.float64, progress=False)))


def test_a_cache_of_another_format_or_source_is_not_used(sample_dir, tmp_path, monkeypatch):
    """The cache's name holds short digests; what is stored inside (format version, source
    digest) is compared too, so a cache written by another format under the same name is rebuilt."""
    root = tmp_path / "root"
    first = QM9(root, source=sample_dir, progress=False)
    stored = torch.load(first.cache_path, weights_only=True)
    for change in ({"format_version": qm9_module.FORMAT_VERSION - 1}, {"inputs": "0" * 12}):
        torch.save({**stored, "y": torch.zeros_like(stored["y"]), **change}, first.cache_path)
        calls = []
        real = qm9_module.read_qm9_xyz
        monkeypatch.setattr(qm9_module, "read_qm9_xyz", lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
        again = QM9(root, source=sample_dir, progress=False)
        monkeypatch.undo()
        assert calls == [1], change
        assert torch.equal(again._data.y, first._data.y)
