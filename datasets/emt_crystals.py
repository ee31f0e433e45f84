"""Crystal training data labelled by ASE's EMT: the sample "own data" file and the crystal-physics check.

    python datasets/emt_crystals.py data/emt/train.extxyz --frames 200
    python datasets/emt_crystals.py data/emt/test.extxyz --frames 50 --seed 1
    python datasets/emt_crystals.py data/emt/mixed.extxyz --frames 40 --clusters 10 --isolated

Each frame is an fcc supercell of Cu or Al (alternating) as a DFT data set of a
metal would hold them: the conventional 2×2×2 cell (32 atoms, orthorhombic
after strain) or the primitive 3×3×3 cell (27 atoms, triclinic), under a
random symmetric strain (volume ±4 %, shear ±2 %), rattled by a Gaussian of
0 to 0.08 Å per component (some frames unrattled, on perfect lattice sites),
and one frame in four with a vacancy. Labels come from ASE's effective-medium
theory potential (`ase.calculators.emt.EMT`: Jacobsen, Stoltze and Nørskov,
Surf. Sci. 366, 394 (1996)), a real potential none of us wrote, which is
also the reference the trained models are compared with
(`train/compare_emt_crystals.yaml`, `geognn.materials`): energy (eV), forces (eV/Å) and stress
(eV/Å³, ASE's sign: positive under tension) in extxyz columns.

``--clusters N`` adds N non-periodic clusters (13 to 19 atoms cut from a
rattled crystal) that carry energy and forces but no stress: a file of mixed
labels. ``--isolated`` adds one isolated atom per element with
``config_type=IsolatedAtom`` (MACE's convention for the per-element reference
energies, which ``data.atom_reference: isolated`` reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# EMT's own zero-pressure lattice constants (Å), the centre of the strains.
LATTICE = {"Cu": 3.59, "Al": 3.99}


def _random_strain(rng: np.random.Generator) -> np.ndarray:
    """A symmetric strain: isotropic part uniform in ±4 % volume, shear components in ±2 %."""
    volumetric = rng.uniform(-0.04, 0.04) / 3.0
    shear = rng.uniform(-0.02, 0.02, size=(3, 3))
    shear = 0.5 * (shear + shear.T)
    return np.eye(3) * (1.0 + volumetric) + shear


def crystal(symbol: str, rng: np.random.Generator):
    """One strained, maybe rattled, maybe vacant fcc supercell of ``symbol`` (no labels yet)."""
    from ase.build import bulk

    if rng.random() < 0.5:
        atoms = bulk(symbol, "fcc", a=LATTICE[symbol], cubic=True).repeat((2, 2, 2))
    else:
        atoms = bulk(symbol, "fcc", a=LATTICE[symbol]).repeat((3, 3, 3))
    atoms.set_cell(atoms.cell.array @ _random_strain(rng), scale_atoms=True)
    rattle = 0.0 if rng.random() < 0.15 else rng.uniform(0.005, 0.08)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    if rng.random() < 0.25:
        del atoms[int(rng.integers(len(atoms)))]
    atoms.wrap()
    atoms.info["config_type"] = "crystal"
    return atoms


def cluster(symbol: str, rng: np.random.Generator):
    """A non-periodic cluster: the atoms within about a second-neighbour shell of one site of a rattled crystal."""
    from ase.build import bulk

    atoms = bulk(symbol, "fcc", a=LATTICE[symbol], cubic=True).repeat((3, 3, 3))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    centre = atoms.positions[int(rng.integers(len(atoms)))]
    radius = LATTICE[symbol] * rng.uniform(0.72, 0.9)
    keep = np.linalg.norm(atoms.positions - centre, axis=1) < radius
    atoms = atoms[keep]
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    atoms.positions -= atoms.positions.mean(axis=0)
    atoms.info["config_type"] = "cluster"
    return atoms


def label(atoms, stress: bool):
    """Attach EMT's energy, forces and (for periodic cells) stress as extxyz labels."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress(voigt=True)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def make_frames(frames: int, seed: int = 0, elements=("Cu", "Al"), clusters: int = 0,
                isolated: bool = False) -> list:
    """``frames`` labelled crystals (elements alternating), then ``clusters`` clusters and the
    isolated atoms, all from one seeded generator."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    result = [label(crystal(elements[k % len(elements)], rng), stress=True) for k in range(frames)]
    result += [label(cluster(elements[k % len(elements)], rng), stress=False) for k in range(clusters)]
    if isolated:
        for symbol in elements:
            atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
            atom.info["config_type"] = "IsolatedAtom"
            result.append(label(atom, stress=False))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="extxyz file to write (its folder is created)")
    parser.add_argument("--frames", type=int, default=200, help="number of crystals (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (use another one for a test file)")
    parser.add_argument("--elements", nargs="+", default=["Cu", "Al"], choices=sorted(LATTICE),
                        help="elements, alternating frame by frame (default Cu Al)")
    parser.add_argument("--clusters", type=int, default=0, help="non-periodic clusters without stress to add")
    parser.add_argument("--isolated", action="store_true",
                        help="add one isolated atom per element (config_type=IsolatedAtom)")
    args = parser.parse_args(argv)
    if args.frames < 0 or args.clusters < 0:
        parser.error("--frames and --clusters must be non-negative")
    import ase.io

    frames = make_frames(args.frames, args.seed, tuple(args.elements), args.clusters, args.isolated)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.output, frames, format="extxyz")
    atoms = sum(len(frame) for frame in frames)
    print(f"wrote {len(frames)} frames ({atoms} atoms) to {args.output}")


if __name__ == "__main__":
    main()
