"""QM9 with forces: QM9 geometries perturbed and relabelled with GFN2-xTB.

QM9 gives one equilibrium geometry and no forces per molecule, so a model
trained on it never sees a force. This recipe makes a force-labelled set from
QM9's chemistry: for each drawn molecule it keeps the QM9 geometry, adds
Gaussian rattles (σ = 0.025 Å by default) and snapshots of a short Langevin MD
run at 500 K, and labels every configuration with energy and forces from the
same method, GFN2-xTB (Bannwarth, Ehlert & Grimme, JCTC 15, 1652, 2019)
through the ``tblite`` package (LGPL; ``pip install "geognn[xtb]"``). QM9's
B3LYP energies are never mixed in.

The work is split into chunks of molecules written as separate extxyz files,
so an interrupted run resumes where it stopped; every molecule's random
numbers derive from (seed, QM9 index), so the output is the same whatever the
number of workers or interruptions. Chunks run in one process per worker with
``OMP_NUM_THREADS=1`` (several threads per small molecule contend badly).

ASE's EMT serves as a dependency-free stand-in calculator for unit tests only:
it is not a molecular method.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from geognn.data.ase_dataset import ASEDataset

FORMAT_VERSION = 1
DATA_FILE = "qm9_xtb.extxyz"
RECIPE_FILE = "recipe.json"
ELEMENT_ENERGIES_FILE = "element_energies.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class XTBRecipe:
    """What is generated: the molecules drawn, the perturbations and the method.

    Attributes:
        num_molecules: QM9 molecules drawn at random (with ``seed``); None takes all.
        rattles: Gaussian-rattled copies of each QM9 geometry.
        rattle_std: standard deviation of each rattle coordinate, Å.
        md_snapshots: configurations taken from a Langevin MD run per molecule.
        md_interval: MD steps between snapshots (the run has
            ``md_snapshots * md_interval`` steps).
        md_temperature: Langevin thermostat temperature, K; initial
            velocities are drawn from Maxwell-Boltzmann at this temperature.
        md_timestep: fs.
        md_friction: Langevin friction, 1/fs.
        include_equilibrium: also label the unperturbed QM9 geometry.
        method: "GFN2-xTB" or "GFN1-xTB" (tblite), or "EMT" (tests only).
        seed: seeds the molecule draw and every molecule's perturbations.
        chunk_size: molecules per chunk file (the unit of resumption).
    """

    num_molecules: Optional[int] = 1000
    rattles: int = 4
    rattle_std: float = 0.025
    md_snapshots: int = 4
    md_interval: int = 10
    md_temperature: float = 500.0
    md_timestep: float = 0.5
    md_friction: float = 0.01
    include_equilibrium: bool = True
    method: str = "GFN2-xTB"
    seed: int = 0
    chunk_size: int = 50

    def __post_init__(self):
        counts = {"rattles": self.rattles, "md_snapshots": self.md_snapshots, "md_interval": self.md_interval}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.md_snapshots and self.md_interval < 1:
            raise ValueError("md_interval must be at least 1 when md_snapshots > 0")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        if self.num_molecules is not None and (not isinstance(self.num_molecules, int) or self.num_molecules < 1):
            raise ValueError(f"num_molecules must be a positive integer or None, got {self.num_molecules!r}")
        for name in ("rattle_std", "md_temperature", "md_timestep", "md_friction"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.method not in CALCULATORS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(CALCULATORS)}")
        if self.configurations_per_molecule == 0:
            raise ValueError("the recipe makes no configurations; set rattles, md_snapshots or include_equilibrium")

    @property
    def configurations_per_molecule(self) -> int:
        return int(self.include_equilibrium) + self.rattles + self.md_snapshots


# ---------------------------------------------------------------- calculators


def _tblite(method: str):
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise ModuleNotFoundError(
            f"{method} labels need the 'tblite' package; run `pip install \"geognn[xtb]\"` (or `pip install tblite`)"
        ) from None
    # accuracy=0.01 converges the SCF tightly enough that forces do not depend on
    # the starting guess (to ~1e-6 eV/Å; the default 1.0 leaves ~1e-4 eV/Å).
    return TBLite(method=method, accuracy=0.01, verbosity=0)


def _emt(method: str):
    from ase.calculators.emt import EMT

    return EMT()


# method name -> factory(method) returning a fresh ASE calculator
CALCULATORS: dict[str, Callable] = {"GFN2-xTB": _tblite, "GFN1-xTB": _tblite, "EMT": _emt}


# ---------------------------------------------------------------- one molecule


def perturbed_configurations(atoms, qm9_index: int, recipe: XTBRecipe, make_calculator: Callable[[], object]) -> list:
    """The labelled configurations of one molecule (equilibrium, rattles, MD snapshots), in that order.

    Each configuration is labelled by a fresh calculator from ``make_calculator``, so
    that a label depends on the geometry alone, not on what was computed before.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution
    from ase.units import fs

    rng = np.random.default_rng([recipe.seed, qm9_index])
    out = []

    def label(configuration, kind: str, number: int):
        configuration = configuration.copy()
        configuration.set_constraint()
        configuration.arrays.pop("momenta", None)  # every frame carries the same arrays
        configuration.calc = make_calculator()
        energy = configuration.get_potential_energy()
        forces = configuration.get_forces()
        configuration.calc = SinglePointCalculator(configuration, energy=energy, forces=forces)
        configuration.info.update(qm9_index=int(qm9_index), kind=kind, number=number)
        out.append(configuration)

    base = atoms.copy()
    base.calc = None
    if recipe.include_equilibrium:
        label(base, "equilibrium", 0)
    for number in range(recipe.rattles):
        rattled = base.copy()
        rattled.positions = base.positions + rng.normal(0.0, recipe.rattle_std, base.positions.shape)
        label(rattled, "rattle", number)
    if recipe.md_snapshots:
        moving = base.copy()
        moving.set_constraint(FixCom())  # ASE's recommended replacement of Langevin(fixcm=True)
        moving.calc = make_calculator()
        # ASE >= 3.29 renames MaxwellBoltzmannDistribution to thermalize_momenta.
        thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
        thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
        thermalize(moving, temperature_K=recipe.md_temperature, rng=rng)
        velocitydistribution.Stationary(moving)
        velocitydistribution.ZeroRotation(moving)
        dynamics = Langevin(
            moving, recipe.md_timestep * fs, temperature_K=recipe.md_temperature,
            friction=recipe.md_friction / fs, fixcm=False, rng=rng,
        )
        for number in range(recipe.md_snapshots):
            dynamics.run(recipe.md_interval)
            label(moving, "md", number)
    return out


def _label_chunk(chunk: Sequence[tuple[int, object]], path: str, recipe: XTBRecipe) -> tuple[int, int, float]:
    """Label one chunk of (qm9_index, Atoms) and write it atomically; returns (written, failed, seconds)."""
    import ase.io

    start = time.perf_counter()
    make_calculator = partial(CALCULATORS[recipe.method], recipe.method)
    configurations, failed = [], 0
    for qm9_index, atoms in chunk:
        try:
            configurations.extend(perturbed_configurations(atoms, qm9_index, recipe, make_calculator))
        except Exception as err:  # an SCF that does not converge must not end a long run
            failed += 1
            warnings.warn(f"QM9 molecule {qm9_index}: labelling failed ({type(err).__name__}: {err}); skipped")
    partial_path = path + ".partial"
    if configurations:
        ase.io.write(partial_path, configurations, format="extxyz")
    else:  # an empty chunk file still marks the chunk as done
        Path(partial_path).write_text("")
    os.replace(partial_path, path)
    return len(configurations), failed, time.perf_counter() - start


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# ---------------------------------------------------------------- the whole set


def run_recipe(
    molecules: Sequence[tuple[int, object]],
    out_dir,
    recipe: XTBRecipe = XTBRecipe(),
    workers: Optional[int] = None,
    progress: bool = True,
    source: Optional[str] = None,
) -> Path:
    """Label ``molecules`` [(qm9_index, Atoms)] into ``out_dir/qm9_xtb.extxyz``; resumes finished chunks.

    Also writes ``recipe.json`` (checked on resume: the format version, the
    recipe, the molecules' indices and a digest of their elements and
    geometries, and ``source``), ``element_energies.json`` (per-element
    energies fitted by least squares on composition, eV) and ``summary.json``
    (counts, failures, labelling time).

    Args:
        workers: processes, one per core by default, each with
            ``OMP_NUM_THREADS=1``; 1 labels in this process, with its own
            OpenMP setting (set ``OMP_NUM_THREADS=1`` before starting Python
            for byte-identical output).
        source: where the molecules came from (recorded, and compared on resume).
    """
    out_dir = Path(out_dir)
    chunk_dir = out_dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "recipe": dataclasses.asdict(recipe), "source": source,
                "molecules": [int(index) for index, _ in molecules], "geometry": _geometry_digest(molecules)}
    recipe_path = out_dir / RECIPE_FILE
    if recipe_path.exists():
        if json.loads(recipe_path.read_text()) != manifest:
            raise ValueError(
                f"{out_dir} holds a run with a different recipe or molecule list ({recipe_path}); "
                "use another folder, or delete it to start over"
            )
    else:
        recipe_path.write_text(json.dumps(manifest, indent=1))
    chunks = [molecules[i : i + recipe.chunk_size] for i in range(0, len(molecules), recipe.chunk_size)]
    paths = [chunk_dir / f"chunk_{k:06d}.extxyz" for k in range(len(chunks))]
    todo = [k for k, path in enumerate(paths) if not path.exists()]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    written = failed = 0
    seconds = 0.0
    bar = tqdm(total=len(molecules), initial=len(molecules) - sum(len(chunks[k]) for k in todo),
               desc=f"{recipe.method} labels", unit=" molecules", disable=not progress)
    if workers == 1:
        for k in todo:
            count, bad, took = _label_chunk(chunks[k], str(paths[k]), recipe)
            written, failed, seconds = written + count, failed + bad, seconds + took
            bar.update(len(chunks[k]))
    else:
        # Children inherit the environment at spawn, before OpenMP starts.
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
                futures = {pool.submit(_label_chunk, chunks[k], str(paths[k]), recipe): k for k in todo}
                for future in as_completed(futures):
                    count, bad, took = future.result()
                    written, failed, seconds = written + count, failed + bad, seconds + took
                    bar.update(len(chunks[futures[future]]))
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
    bar.close()
    return _merge(out_dir, paths, recipe, written, failed, seconds)


def _geometry_digest(molecules: Sequence[tuple[int, object]]) -> str:
    """SHA-256 of the molecules' atomic numbers and float64 positions, so that a resume with the
    same indices from another source (other geometries) is refused."""
    digest = hashlib.sha256()
    for _, atoms in molecules:
        digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
        digest.update(np.asarray(atoms.positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _merge(out_dir: Path, paths: Sequence[Path], recipe: XTBRecipe, written: int, failed: int, seconds: float) -> Path:
    from geognn.data.stats import fit_element_energies

    target = out_dir / DATA_FILE
    partial_path = out_dir / (DATA_FILE + ".partial")
    with open(partial_path, "wb") as merged:
        for path in paths:
            with open(path, "rb") as chunk:
                shutil.copyfileobj(chunk, merged)
    os.replace(partial_path, target)
    dataset = ASEDataset(target, stress_key=None, dtype=torch.float64)
    energies = fit_element_energies(dataset)
    (out_dir / ELEMENT_ENERGIES_FILE).write_text(
        json.dumps({str(z): float(e) for z, e in enumerate(energies.tolist()) if e != 0.0}, indent=1)
    )
    summary_path = out_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"labelled_this_run": []}
    summary.update(configurations=len(dataset), method=recipe.method)
    if written:
        summary["labelled_this_run"].append(
            {"configurations": written, "failed_molecules": failed,
             "worker_seconds_per_1000_configurations": 1000 * seconds / written}
        )
    summary_path.write_text(json.dumps(summary, indent=1))
    return target


def qm9_molecules(num_molecules: Optional[int], seed: int, source=None, root=None) -> list[tuple[int, object]]:
    """(QM9 index, Atoms) of ``num_molecules`` QM9 molecules drawn with ``seed`` (all if None)."""
    from ase import Atoms

    from geognn.data.qm9 import QM9

    qm9 = QM9(root or "data/qm9", target=None, source=source, dtype=torch.float64, progress=False)
    if num_molecules is not None and num_molecules > len(qm9):
        raise ValueError(f"num_molecules={num_molecules} but the QM9 source has only {len(qm9)} molecules")
    if num_molecules is not None:
        qm9 = QM9(qm9.root, target=None, source=source, subset=num_molecules, seed=seed, dtype=torch.float64,
                  progress=False)
    return [(int(d.idx), Atoms(numbers=d.z.numpy(), positions=d.pos.numpy())) for d in qm9]


def _source_name(source) -> str:
    return "qm9pack" if source is None else str(Path(source).resolve())


class QM9xTB(ASEDataset):
    """QM9 geometries perturbed and labelled with GFN2-xTB energies and forces (see this module's doc).

    Reads ``<root>/qm9_xtb.extxyz``, generating it first when it is missing
    (which needs ``tblite``). Items carry ``energy`` (eV, float64) and
    ``forces`` (eV/Å), and ``group`` [1]: the molecule (its QM9 index, numbered in order of
    appearance), so that ``data.split_by: molecule`` keeps a molecule's configurations together.
    ``element_energies`` [10] holds the fitted per-element energies (eV).

    Args:
        root: output folder of the recipe.
        recipe: an `XTBRecipe`; keyword arguments (``num_molecules=...``,
            ``method=...``) override its fields.
        source: QM9 source for the geometries (None = qm9pack; or a folder or
            tarball of dsgdb9nsd .xyz files, such as ``datasets/samples/qm9_xyz``).
        generate: if False, a missing file is an error instead of a long job.
        qm9_root: cache folder of the QM9 geometries (default ``<root>/qm9``).
        workers: processes for generation (default: one per core).
        dtype: as for `ASEDataset`.
        transform: as for `ASEDataset`.
    """

    def __init__(self, root, recipe: Optional[XTBRecipe] = None, source=None, generate: bool = True,
                 qm9_root=None, workers: Optional[int] = None, dtype=None, transform=None, progress: bool = True,
                 **overrides):
        recipe = dataclasses.replace(recipe or XTBRecipe(), **overrides)
        root = Path(root)
        path = root / DATA_FILE
        if not path.exists():
            if not generate:
                raise FileNotFoundError(f"{path} does not exist; run the recipe (datasets/qm9_xtb/README.md) first")
            molecules = qm9_molecules(recipe.num_molecules, recipe.seed, source, qm9_root or root / "qm9")
            run_recipe(molecules, root, recipe, workers=workers, progress=progress, source=_source_name(source))
        else:
            recipe_path = root / RECIPE_FILE
            stored = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
            if stored.get("recipe") != dataclasses.asdict(recipe):
                raise ValueError(f"{root} was generated with recipe {stored.get('recipe')}, "
                                 f"not {dataclasses.asdict(recipe)}")
            if stored.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"{root} was generated by format {stored.get('format_version')} of this recipe, "
                                 f"not {FORMAT_VERSION}; generate it again in a new folder")
            # Folders written before the source was recorded, or by run_recipe without one, are taken as they are.
            if stored.get("source") is not None and stored["source"] != _source_name(source):
                raise ValueError(f"{root} was generated from QM9 source {stored['source']}, "
                                 f"not {_source_name(source)}")
        super().__init__(path, stress_key=None, dtype=dtype, transform=transform, group_by="qm9_index")
        self.recipe = recipe
        element_energies = json.loads((root / ELEMENT_ENERGIES_FILE).read_text())
        self.element_energies = torch.zeros(10, dtype=torch.float64)
        for z, energy in element_energies.items():
            self.element_energies[int(z)] = energy


__all__ = ["XTBRecipe", "CALCULATORS", "run_recipe", "perturbed_configurations", "qm9_molecules", "QM9xTB"]
