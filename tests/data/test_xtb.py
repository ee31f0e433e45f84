"""The QM9-with-forces recipe: labels, perturbations, determinism, resumption, QM9xTB.

EMT stands in for GFN2-xTB where only the pipeline is under test; the tests
that need tblite are skipped without it.
"""

import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from geognn.data import ASEDataset, QM9xTB, fit_element_energies
from geognn.data import xtb as xtb_module
from geognn.data.xtb import XTBRecipe, qm9_molecules, run_recipe

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples"
HAVE_TBLITE = importlib.util.find_spec("tblite") is not None
RECIPE = XTBRecipe(method="EMT", num_molecules=None, rattles=2, md_snapshots=2, md_interval=3, chunk_size=2, seed=7)


@pytest.fixture(scope="module")
def molecules(tmp_path_factory):
    """Four sample QM9 molecules EMT can handle (H, C, N, O only)."""
    every = qm9_molecules(None, 0, source=SAMPLES / "qm9_xyz", root=tmp_path_factory.mktemp("qm9"))
    return [(index, atoms) for index, atoms in every if 9 not in atoms.numbers and len(atoms) > 4][:4]


def _configurations(path):
    return ase.io.read(path, ":")


def test_recipe_labels_are_the_calculators(molecules, tmp_path):
    path = run_recipe(molecules, tmp_path, RECIPE, workers=1, progress=False)
    frames = _configurations(path)
    assert len(frames) == len(molecules) * RECIPE.configurations_per_molecule == len(molecules) * 5
    kinds = [frame.info["kind"] for frame in frames[:5]]
    assert kinds == ["equilibrium", "rattle", "rattle", "md", "md"]
    for frame in frames:
        recomputed = frame.copy()
        recomputed.calc = EMT()
        # extxyz keeps 8 decimals of positions: the labels agree to that precision.
        assert frame.get_potential_energy() == pytest.approx(recomputed.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(frame.get_forces(), recomputed.get_forces(), atol=1e-5)
    by_index = dict(molecules)
    equilibrium = [f for f in frames if f.info["kind"] == "equilibrium"]
    for frame in equilibrium:
        np.testing.assert_allclose(frame.positions, by_index[frame.info["qm9_index"]].positions, atol=1e-8)
    md = [f for f in frames if f.info["kind"] == "md"]
    for frame in md:
        start = by_index[frame.info["qm9_index"]].positions
        assert 1e-3 < np.abs(frame.positions - start).max() < 0.5  # moved, but a short run
        # FixCom: the centre of mass stays where it started.
        masses = frame.get_masses()[:, None]
        np.testing.assert_allclose((masses * frame.positions).sum(0), (masses * start).sum(0), atol=1e-6)


def test_rattles_have_the_requested_spread(molecules, tmp_path):
    recipe = XTBRecipe(method="EMT", num_molecules=None, rattles=20, md_snapshots=0,
                       include_equilibrium=False, rattle_std=0.03, chunk_size=4)
    frames = _configurations(run_recipe(molecules, tmp_path, recipe, workers=1, progress=False))
    by_index = dict(molecules)
    displacement = np.concatenate([(f.positions - by_index[f.info["qm9_index"]].positions).ravel() for f in frames])
    assert displacement.size > 1000
    assert displacement.std() == pytest.approx(0.03, rel=0.1)
    assert abs(displacement.mean()) < 0.01


def test_deterministic_across_runs_and_worker_counts(molecules, tmp_path):
    one = run_recipe(molecules, tmp_path / "a", RECIPE, workers=1, progress=False).read_text()
    again = run_recipe(molecules, tmp_path / "b", RECIPE, workers=1, progress=False).read_text()
    pooled = run_recipe(molecules, tmp_path / "c", RECIPE, workers=2, progress=False).read_text()
    assert one == again == pooled
    other_seed = XTBRecipe(**{**RECIPE.__dict__, "seed": 8})
    assert run_recipe(molecules, tmp_path / "d", other_seed, workers=1, progress=False).read_text() != one


def test_interrupted_run_resumes_to_the_same_output(molecules, tmp_path, monkeypatch):
    clean = run_recipe(molecules, tmp_path / "clean", RECIPE, workers=1, progress=False).read_text()
    real = xtb_module._label_chunk
    calls = []

    def interrupted(chunk, path, recipe):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(chunk, path, recipe)

    monkeypatch.setattr(xtb_module, "_label_chunk", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_recipe(molecules, out, RECIPE, workers=1, progress=False)
    assert not (out / xtb_module.DATA_FILE).exists()
    assert len(list((out / "chunks").glob("*.extxyz"))) == 1 and not list(out.rglob("*.partial"))
    calls.clear()
    monkeypatch.setattr(xtb_module, "_label_chunk", lambda *args: calls.append(args[1]) or real(*args))
    resumed = run_recipe(molecules, out, RECIPE, workers=1, progress=False).read_text()
    assert len(calls) == 1  # only the unfinished chunk was labelled again
    assert resumed == clean
    summary = json.loads((out / xtb_module.SUMMARY_FILE).read_text())
    assert summary["configurations"] == len(molecules) * 5
    assert summary["labelled_this_run"][-1]["worker_seconds_per_1000_configurations"] > 0


def test_a_different_recipe_in_the_same_folder_is_refused(molecules, tmp_path):
    run_recipe(molecules[:2], tmp_path, RECIPE, workers=1, progress=False)
    other = XTBRecipe(**{**RECIPE.__dict__, "rattle_std": 0.05})
    with pytest.raises(ValueError, match="different recipe"):
        run_recipe(molecules[:2], tmp_path, other, workers=1, progress=False)


def test_element_energies_file_is_the_regression(molecules, tmp_path):
    path = run_recipe(molecules, tmp_path, RECIPE, workers=1, progress=False)
    stored = json.loads((tmp_path / xtb_module.ELEMENT_ENERGIES_FILE).read_text())
    fitted = fit_element_energies(ASEDataset(path, dtype=torch.float64))
    assert {int(z) for z in stored} == set(torch.nonzero(fitted).flatten().tolist())
    for z, energy in stored.items():
        assert energy == pytest.approx(fitted[int(z)].item(), rel=1e-12)


def test_qm9xtb_dataset_skips_molecules_the_method_cannot_label(tmp_path):
    # The sample holds a fluorine molecule, which EMT cannot describe: it is skipped, counted and reported.
    with pytest.warns(UserWarning, match="labelling failed"):
        dataset = QM9xTB(tmp_path, source=SAMPLES / "qm9_xyz", method="EMT", num_molecules=None, rattles=1,
                         md_snapshots=0, chunk_size=8, workers=1, progress=False)
    summary = json.loads((tmp_path / xtb_module.SUMMARY_FILE).read_text())
    assert summary["labelled_this_run"][0]["failed_molecules"] == 1
    assert len(dataset) == 2 * 30
    assert dataset.labels == {"energy", "forces"}
    assert dataset.element_energies[[1, 6, 7, 8]].abs().min() > 0 and dataset.element_energies[9] == 0
    again = QM9xTB(tmp_path, source=SAMPLES / "qm9_xyz", method="EMT", num_molecules=None, rattles=1,
                   md_snapshots=0, chunk_size=8, generate=False)
    assert len(again) == len(dataset)
    with pytest.raises(ValueError, match="generated with recipe"):
        QM9xTB(tmp_path, method="EMT", num_molecules=None, rattles=2, md_snapshots=0, chunk_size=8, generate=False)
    with pytest.raises(FileNotFoundError, match="run the recipe"):
        QM9xTB(tmp_path / "empty", generate=False)


def test_recipe_validation():
    with pytest.raises(ValueError, match="rattles"):
        XTBRecipe(rattles=-1)
    with pytest.raises(ValueError, match="unknown method"):
        XTBRecipe(method="GFN3")
    with pytest.raises(ValueError, match="no configurations"):
        XTBRecipe(rattles=0, md_snapshots=0, include_equilibrium=False)
    with pytest.raises(ValueError, match="md_interval"):
        XTBRecipe(md_interval=0)


def test_missing_tblite_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ModuleNotFoundError, match=r"geognn\[xtb\]"):
        xtb_module.CALCULATORS["GFN2-xTB"]("GFN2-xTB")


@pytest.mark.skipif(not HAVE_TBLITE, reason="tblite is not installed (pip install 'geognn[xtb]')")
def test_gfn2_forces_are_minus_the_energy_gradient_and_the_sample_matches():
    frames = ase.io.read(SAMPLES / "qm9_xtb_sample.extxyz", ":")
    frame = frames[1]  # a rattled configuration
    calculator = xtb_module.CALCULATORS["GFN2-xTB"]("GFN2-xTB")
    atoms = frame.copy()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), frame.get_forces(), atol=1e-6)
    step = 1e-4
    for atom, axis in [(0, 0), (3, 2), (len(atoms) - 1, 1)]:
        energies = []
        for sign in (1, -1):
            moved = frame.copy()
            moved.positions[atom, axis] += sign * step
            moved.calc = calculator
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(frame.get_forces()[atom, axis], abs=2e-4)


def test_a_resume_from_other_geometries_or_source_is_refused(molecules, tmp_path):
    """The chunks of a run belong to its molecules' geometries, not only to their indices: a resume
    with the same indices from another source is refused, and so is loading a finished folder
    with another QM9 source."""
    run_recipe(molecules[:2], tmp_path / "run", RECIPE, workers=1, progress=False)
    moved = [(index, atoms.copy()) for index, atoms in molecules[:2]]
    moved[1][1].positions[0] += 0.01
    with pytest.raises(ValueError, match="different recipe or molecule list"):
        run_recipe(moved, tmp_path / "run", RECIPE, workers=1, progress=False)

    recipe = dict(method="EMT", num_molecules=3, rattles=1, md_snapshots=0, chunk_size=8, seed=3)
    source = tmp_path / "xyz"
    shutil.copytree(SAMPLES / "qm9_xyz", source)
    with warnings.catch_warnings():  # three molecules determine few element energies
        warnings.simplefilter("ignore")
        QM9xTB(tmp_path / "data", source=source, workers=1, progress=False, **recipe)
    per_molecule = XTBRecipe(**recipe).configurations_per_molecule
    assert len(QM9xTB(tmp_path / "data", source=source, generate=False, **recipe)) == 3 * per_molecule
    other = tmp_path / "other_xyz"
    shutil.copytree(SAMPLES / "qm9_xyz", other)
    with pytest.raises(ValueError, match="generated from QM9 source"):
        QM9xTB(tmp_path / "data", source=other, generate=False, **recipe)
