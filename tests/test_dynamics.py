"""`geognn md` and `geognn relax`: MD and relaxation from checkpoints, their summaries and their errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write

from geognn.cli import main
from geognn.dynamics import load_calculator, read_structure, run_md, run_relax
from geognn.training import TrainConfig, fit, from_dict

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "qm9_xtb_sample.extxyz"


def _train(run_dir: Path, seed: int, forces_weight: float = 10.0) -> Path:
    recipe = {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "data": {"dataset": "ase", "options": {"paths": str(SAMPLE)}, "split": [10, 3, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "forces_weight": forces_weight, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none", "ema_decay": None},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 100},
        "dtype": "float64", "seed": seed,
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the dataset's compositions determine only")
        return fit(from_dict(TrainConfig, recipe)).best_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn_runs")
    return {"a": _train(root / "a", 0), "b": _train(root / "b", 1), "energy_only": _train(root / "e", 0, 0.0)}


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "molecule.xyz"
    write(path, read(SAMPLE, index=8))  # C7H10N2
    return path


def test_nve_conserves_energy_and_writes_its_files(runs, structure, tmp_path):
    """NVE with a small time step conserves the total energy (forces are the exact gradient);
    the trajectory holds a frame per interval and the log a line per frame."""
    atoms = read_structure(structure)
    atoms.calc = load_calculator([runs["a"]])
    summary = run_md(atoms, steps=40, timestep_fs=0.25, temperature_K=300, trajectory=tmp_path / "md.traj",
                     logfile=tmp_path / "md.log", interval=10, progress=False)
    assert abs(summary.drift_per_atom) < 1e-4 and summary.time_fs == pytest.approx(10.0)
    assert len(read(tmp_path / "md.traj", index=":")) == 5  # steps 0, 10, 20, 30, 40
    rows = np.loadtxt(tmp_path / "md.log")
    assert rows.shape == (5, 6) and rows[-1, 0] == 40
    np.testing.assert_allclose(rows[:, 4], rows[:, 2] + rows[:, 3], atol=2e-6)
    assert "NVE 40 steps" in summary.line() and "meV/atom" in summary.line()


def test_langevin_and_an_ensemble_log_the_force_spread(runs, structure, tmp_path):
    atoms = read_structure(structure)
    atoms.calc = load_calculator([runs["a"], runs["b"]])
    summary = run_md(atoms, steps=20, thermostat="langevin", logfile=tmp_path / "md.log", interval=5, progress=False)
    rows = np.loadtxt(tmp_path / "md.log")
    assert rows.shape == (5, 7) and (rows[:, 6] > 0).all()
    assert summary.max_force_std == pytest.approx(rows[:, 6].max(), rel=1e-4)
    assert "largest force spread" in summary.line() and "drift" not in summary.line()


def test_relax_lowers_the_energy_to_fmax(runs, structure, tmp_path):
    atoms = read_structure(structure)
    atoms.rattle(0.05, seed=0)
    atoms.calc = load_calculator([runs["a"]])
    summary = run_relax(atoms, fmax=0.05, steps=300, trajectory=tmp_path / "opt.traj", progress=False)
    assert summary.converged and summary.fmax < 0.05 and summary.final_energy < summary.initial_energy
    forces = atoms.get_forces()
    assert np.sqrt((forces ** 2).sum(1)).max() == pytest.approx(summary.fmax)
    fire = read_structure(structure)
    fire.calc = load_calculator([runs["a"]])
    assert run_relax(fire, fmax=0.05, steps=3, optimizer="fire", progress=False).steps == 3


def test_md_and_relax_commands(runs, structure, tmp_path, capsys):
    traj, log = tmp_path / "out" / "md.traj", tmp_path / "out" / "md.log"
    code = main(["md", str(structure), str(runs["a"]), "--steps", "20", "--timestep", "0.25", "--trajectory",
                 str(traj), "--log", str(log), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "C7H10N2: NVE 20 steps" in out and "total energy drift" in out and traj.exists()
    code = main(["relax", str(structure), str(runs["a"]), str(runs["b"]), "--fmax", "0.5", "--trajectory",
                 str(tmp_path / "opt.traj"), "--log", str(tmp_path / "opt.log"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "BFGS (positions) converged" in out and "final fmax" in out


def test_md_command_holds_a_pressure_with_npt(runs, structure, tmp_path, capsys):
    """--thermostat npt on a periodic box: the log's header names ASE's LangevinBAOAB and adds volume (Å^3) and
    pressure (GPa) columns, the trajectory's cells are the logged volumes, and the summary line gives the
    second half's means. Options that only NPT reads, NPT on a molecule, and a contradiction are refused in
    one line."""
    box = read(structure)
    box.center(vacuum=4.0)
    box.pbc = True
    path = tmp_path / "box.xyz"
    write(path, box)
    traj, log = tmp_path / "npt.traj", tmp_path / "npt.log"
    code = main(["md", str(path), str(runs["a"]), "--thermostat", "npt", "--pressure-gpa", "0.1", "--barostat-fs",
                 "200", "--npt-cell", "full", "--steps", "4", "--interval", "2", "--trajectory", str(traj),
                 "--log", str(log), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "C7H10N2: NPT 4 steps" in out and "mean pressure" in out and "held at 0.1 GPa" in out
    header, columns = log.read_text().splitlines()[:2]
    assert header.startswith("# NPT") and "LangevinBAOAB at 0.1 GPa, full cell" in header
    assert columns.split()[-2:] == ["volume_A3", "pressure_GPa"]
    rows = np.loadtxt(log)
    assert rows.shape == (3, 8)
    np.testing.assert_allclose(rows[:, 6], [frame.get_volume() for frame in read(traj, index=":")], rtol=1e-6)
    assert rows[0, 6] == pytest.approx(box.get_volume()) and rows[-1, 6] != rows[0, 6]  # the cell moved

    molecule_run = ["md", str(structure), str(runs["a"]), "--steps", "2", "--log", str(tmp_path / "x.log"),
                    "--trajectory", str(tmp_path / "x.traj"), "--no-progress"]
    cases = [
        (molecule_run + ["--thermostat", "npt"], r"NPT needs a structure periodic in all three directions"),
        (molecule_run + ["--pressure-gpa", "1"], r"--pressure-gpa, --barostat-fs and --npt-cell apply to --thermostat"),
        (molecule_run + ["--langevin", "--thermostat", "npt"], r"--langevin and --thermostat npt disagree"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("geognn md: error:")
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "x.log").exists() and not (tmp_path / "x.traj").exists()


def test_bad_input_gets_one_line(runs, structure, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default outputs, runs/<command>/..., are relative
    cases = [
        (["md", str(tmp_path / "missing.xyz"), str(runs["a"])], "structure file .* does not exist"),
        (["md", str(structure), str(tmp_path / "missing.pt")], "checkpoint .* does not exist"),
        (["relax", str(structure), str(runs["a"]), "--cell"], "relaxing the cell needs the stress of a periodic"),
    ]
    gold = tmp_path / "gold.xyz"
    write(gold, bulk("Au", "fcc", a=4.08))
    cases.append((["md", str(gold), str(runs["a"])], "Au"))
    junk = tmp_path / "junk.xyz"
    junk.write_text("not a structure\n")
    cases.append((["relax", str(junk), str(runs["a"])], "cannot read a structure"))
    for argv, message in cases:
        assert main(argv + ["--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"geognn {argv[0]}: error:")
        assert __import__("re").search(message, err), err


def test_md_and_relax_refuse_to_overwrite_their_output(runs, structure, tmp_path, capsys, monkeypatch):
    """A second run onto the same trajectory or log stops with one line naming the existing file(s) and
    --overwrite, before the checkpoint loads and before anything is written; --overwrite replaces them."""
    monkeypatch.chdir(tmp_path)
    md = ["md", str(structure), str(runs["a"]), "--steps", "2", "--interval", "1", "--no-progress"]
    assert main(md) == 0
    traj, log = Path("runs/md/molecule.traj"), Path("runs/md/molecule.log")
    first = {path: path.read_bytes() for path in (traj, log)}
    capsys.readouterr()

    def must_not_load(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded although the output exists")

    with monkeypatch.context() as patch:
        patch.setattr("geognn.dynamics.load_calculator", must_not_load)
        cases = [
            (md + ["--langevin"], [traj, log]),  # the defaults: an NVE run would be lost to a Langevin one
            (md + ["--trajectory", "new/md.traj"], [log]),
            (md + ["--log", "new/md.log"], [traj]),
        ]
        for argv, existing in cases:
            assert main(argv) == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.startswith("geognn md: error:") and "--overwrite" in err, err
            assert all(str(path) in err for path in existing), err
            assert not any(str(path) in err for path in {traj, log} - set(existing)), err  # only what exists
        assert not Path("new").exists()  # nothing written, not even the folder
        assert {path: path.read_bytes() for path in (traj, log)} == first

    assert main(md + ["--langevin", "--overwrite"]) == 0
    assert log.read_text().startswith("# LANGEVIN") and len(read(traj, index=":")) == 3  # steps 0, 1, 2

    relax = ["relax", str(structure), str(runs["a"]), "--fmax", "1e-9", "--steps", "2", "--no-progress"]
    assert main(relax) == 2  # stopped before converging: the log holds one header and steps 0-2
    relax_log = Path("runs/relax/molecule.log")
    assert main(relax) == 1 and "runs/relax/molecule.traj and runs/relax/molecule.log" in capsys.readouterr().err
    assert main(relax + ["--steps", "1", "--overwrite"]) == 2
    lines = relax_log.read_text().splitlines()  # replaced, not appended to (ASE's optimizers append)
    assert sum("Step" in line for line in lines) == 1 and len(lines) == 3
    assert len(read("runs/relax/molecule.traj", index=":")) == 2


def test_run_md_and_run_relax_refuse_existing_output_unless_told(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]])
    atoms.calc = ConstantForces(np.zeros((2, 3)))
    (tmp_path / "md.log").write_text("an earlier run\n")
    for run in (lambda **kw: run_md(atoms, steps=2, **kw), lambda **kw: run_relax(atoms, steps=2, **kw)):
        with pytest.raises(FileExistsError, match=r"md\.log already exists .*overwrite=True"):
            run(trajectory=tmp_path / "md.traj", logfile=tmp_path / "md.log", progress=False)
        assert not (tmp_path / "md.traj").exists() and (tmp_path / "md.log").read_text() == "an earlier run\n"
        assert not atoms.get_momenta().any()  # refused before the velocities were drawn
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="the same file"):
            run_md(atoms, steps=2, trajectory=tmp_path / "x", logfile=tmp_path / "x", overwrite=overwrite,
                   progress=False)
        with pytest.raises(ValueError, match="is a folder"):
            run_relax(atoms, steps=2, logfile=tmp_path, overwrite=overwrite, progress=False)
    run_md(atoms, steps=2, logfile=tmp_path / "md.log", progress=False, overwrite=True)
    assert "an earlier run" not in (tmp_path / "md.log").read_text()


def test_a_checkpoint_trained_without_forces_warns(runs):
    with pytest.warns(UserWarning, match="trained without forces"):
        load_calculator([runs["energy_only"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_calculator([runs["a"]])


# ---- the integrators' units, checked on systems whose motion is known in closed form ----


class ConstantForces(Calculator):
    """E = -sum_i F_i . r_i: a fixed force on every atom wherever it is (zero: free particles)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, forces):
        super().__init__()
        self.forces = np.array(forces, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": -float((self.forces * self.atoms.positions).sum()), "forces": self.forces.copy()}


class HarmonicWells(Calculator):
    """E = sum_i k_i/2 |r_i - r0_i|^2: each atom on its own spring, the forces -k_i (r_i - r0_i)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, centres, stiffness):
        super().__init__()
        self.centres = np.array(centres, dtype=float)
        self.stiffness = np.array(stiffness, dtype=float).reshape(-1, 1)  # eV/Å^2, one per atom

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        shift = self.atoms.positions - self.centres
        self.results = {"energy": 0.5 * float((self.stiffness * shift ** 2).sum()), "forces": -self.stiffness * shift}


def _gas(symbols: str, count: int, seed: int = 0) -> Atoms:
    """`count` free atoms spread through a large open box, forces zero."""
    rng = np.random.default_rng(seed)
    atoms = Atoms(symbols * count)
    atoms.positions = rng.uniform(0.0, 200.0, (len(atoms), 3))
    atoms.calc = ConstantForces(np.zeros((len(atoms), 3)))
    return atoms


def test_nve_moves_atoms_by_v_t_plus_f_t2_over_2m_with_t_in_fs(tmp_path):
    """Velocity Verlet is exact under constant forces: x(t) = x0 + v0 t + F t^2 / 2m and v(t) = v0 + F t / m,
    with t the simulated time in ASE units (fs * units.fs). The log's time column and the summary's time
    are that same time, in fs: steps * timestep_fs."""
    atoms = _gas("HC", 20)
    forces = np.random.default_rng(1).normal(0.0, 1.0, (len(atoms), 3))  # eV/Å: ~Å moves in 20 fs
    atoms.calc = ConstantForces(forces)
    masses = atoms.get_masses()[:, None]
    summary = run_md(atoms, steps=40, timestep_fs=0.5, temperature_K=300, trajectory=tmp_path / "md.traj",
                     logfile=tmp_path / "md.log", interval=10, progress=False)
    frames = read(tmp_path / "md.traj", index=":")
    start, velocity = frames[0].positions, frames[0].get_velocities()
    assert np.abs(velocity).max() > 0.01  # Å per ASE time unit: thermal, so the v0 t term is tested too
    rows = np.loadtxt(tmp_path / "md.log")
    np.testing.assert_array_equal(rows[:, 0], [0, 10, 20, 30, 40])
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * 0.5, atol=1e-4)
    assert summary.steps == 40 and summary.time_fs == pytest.approx(20.0)
    for frame, time_fs in zip(frames, rows[:, 1]):  # the reported time is the time the atoms moved for
        time = time_fs * units.fs
        np.testing.assert_allclose(frame.positions, start + velocity * time + forces * time ** 2 / (2 * masses),
                                   atol=1e-3)
    time = summary.time_fs * units.fs
    np.testing.assert_allclose(atoms.positions, start + velocity * time + forces * time ** 2 / (2 * masses),
                               atol=1e-9)
    np.testing.assert_allclose(atoms.get_velocities(), velocity + forces * time / masses, atol=1e-9)


def test_nve_starts_free_atoms_at_the_asked_temperature():
    """Free atoms keep their start velocities, rescaled to the asked temperature: the mean kinetic temperature
    is the one asked for, not a draw within the sampling spread of 3N velocities (relative sd sqrt(2 / 3N))."""
    atoms = _gas("Ar", 4000)
    summary = run_md(atoms, steps=20, timestep_fs=1.0, temperature_K=500, interval=10, progress=False)
    assert summary.mean_temperature == pytest.approx(500, rel=1e-10)


def _ethanol() -> Atoms:
    from ase.build import molecule

    return molecule("CH3CH2OH")  # 9 atoms: a Maxwell-Boltzmann draw alone lands tens of percent off


@pytest.mark.parametrize("case, degrees_of_freedom", [
    ("molecule nve", 3 * 9 - 6),  # centre-of-mass motion and rotation removed, both conserved
    ("linear nve", 3 * 3 - 5),  # CO2: no rotation about its axis
    ("cell nve", 3 * 8 - 3),  # periodic: only centre-of-mass motion removed
    ("molecule langevin", 3 * 9),  # the bath kicks every component
])
def test_md_starts_exactly_at_the_asked_temperature(tmp_path, case, degrees_of_freedom):
    """The first logged temperature, and 2 E_kin / (f k_B) of the first frame's velocities, are the asked
    temperature, with f the components that carry kinetic energy (given in the log's header); the
    centre-of-mass momentum (and, for a molecule, the angular momentum) is zero. Seeded: the same seed
    gives the same velocities, another seed others."""
    from ase.build import bulk, molecule

    structure, thermostat = case.split()
    atoms = {"molecule": _ethanol, "linear": lambda: molecule("CO2"),
             "cell": lambda: bulk("Cu", cubic=True).repeat((2, 1, 1))}[structure]()
    atoms.calc = ConstantForces(np.zeros((len(atoms), 3)))
    summary = run_md(atoms, steps=4, temperature_K=300, thermostat=thermostat, trajectory=tmp_path / "md.traj",
                     logfile=tmp_path / "md.log", interval=2, seed=7, progress=False)
    frame = read(tmp_path / "md.traj", index=0)
    masses, velocities = frame.get_masses()[:, None], frame.get_velocities()
    kinetic = 0.5 * (masses * velocities ** 2).sum()
    assert 2 * kinetic / (degrees_of_freedom * units.kB) == pytest.approx(300, rel=1e-10)
    header = (tmp_path / "md.log").read_text().splitlines()[0]
    assert f"({degrees_of_freedom} kB)" in header and thermostat.upper() in header
    rows = np.loadtxt(tmp_path / "md.log")
    assert rows[0, 5] == 300.00 and rows[0, 3] == pytest.approx(kinetic, abs=1e-6)
    momentum_scale = np.sqrt((masses * kinetic).sum())  # eV-ish units: |p| of a typical atom, times sqrt(N)
    assert np.abs((masses * velocities).sum(axis=0)).max() < 1e-12 * momentum_scale
    if structure != "cell":
        assert np.abs(frame.get_angular_momentum()).max() < 1e-10 * momentum_scale
    if thermostat == "nve":  # free atoms: the velocities, and so the temperature, never change
        assert summary.mean_temperature == pytest.approx(300, rel=1e-10)
    again = atoms.copy()
    again.calc = ConstantForces(np.zeros((len(atoms), 3)))
    again.positions = frame.positions
    run_md(again, steps=1, temperature_K=300, thermostat=thermostat, trajectory=tmp_path / "again.traj", seed=7,
           progress=False)
    np.testing.assert_array_equal(read(tmp_path / "again.traj", index=0).get_velocities(), velocities)
    run_md(again, steps=1, temperature_K=300, thermostat=thermostat, trajectory=tmp_path / "other.traj", seed=8,
           progress=False)
    assert np.abs(read(tmp_path / "other.traj", index=0).get_velocities() - velocities).max() > 1e-3


def test_langevin_velocities_forget_their_start_at_the_friction_rate(tmp_path):
    """Without forces the Langevin velocity is an Ornstein-Uhlenbeck process: <v(0) . v(t)> / <v(0)^2> =
    exp(-gamma t), with gamma the friction in 1/fs and t in fs. 1,000 atoms give it within ~0.02; a friction
    10x too weak or too strong, or a time step 10x too long, moves the curve by more than 0.3."""
    atoms = _gas("Ar", 1000)
    friction = 0.01  # 1/fs
    summary = run_md(atoms, steps=150, timestep_fs=1.0, temperature_K=300, thermostat="langevin",
                     friction_per_fs=friction, trajectory=tmp_path / "md.traj", logfile=tmp_path / "md.log",
                     interval=25, progress=False)
    times_fs = 25.0 * np.arange(7)
    rows = np.loadtxt(tmp_path / "md.log")
    np.testing.assert_allclose(rows[:, 1], times_fs, atol=1e-4)
    assert summary.steps == 150 and summary.time_fs == pytest.approx(150.0)
    frames = read(tmp_path / "md.traj", index=":")
    start = frames[0].get_velocities()
    memory = [(frame.get_velocities() * start).sum() / (start ** 2).sum() for frame in frames]
    spread = np.sqrt((1 - np.exp(-2 * friction * times_fs)) / (3 * len(atoms)))
    np.testing.assert_array_less(np.abs(memory - np.exp(-friction * times_fs)), 4 * spread + 1e-9)


def test_langevin_holds_the_asked_temperature(tmp_path):
    """The bath pulls the kinetic temperature to its own within 1 / (2 gamma) = 10 fs; after 100 fs the
    logged temperature averages to the asked one (a bath at another temperature would take it there)."""
    atoms = _gas("Ar", 1000)
    run_md(atoms, steps=400, timestep_fs=1.0, temperature_K=300, thermostat="langevin", friction_per_fs=0.05,
           logfile=tmp_path / "md.log", interval=10, progress=False)
    rows = np.loadtxt(tmp_path / "md.log")
    settled = rows[rows[:, 1] >= 100.0, 5]
    assert len(settled) == 31 and settled.mean() == pytest.approx(300, rel=0.03)


def test_relax_reports_the_largest_per_atom_force_norm():
    """Constant forces never relax; their fmax is the largest |F_i| (0.3 sqrt 3 on atom 0), not the largest
    component (0.4 on atom 1), nor the norm of all forces together, nor a squared norm."""
    atoms = Atoms("H3", positions=[[0, 0, 0], [3, 0, 0], [0, 3, 0]])
    atoms.calc = ConstantForces([[0.3, 0.3, 0.3], [0.4, 0.0, 0.0], [0.0, -0.1, 0.2]])
    summary = run_relax(atoms, fmax=0.05, steps=3, optimizer="fire", progress=False)  # BFGS's update needs F to vary
    assert not summary.converged and summary.steps == 3
    assert summary.fmax == pytest.approx(0.3 * np.sqrt(3), rel=1e-12)


@pytest.mark.parametrize("optimizer", ["bfgs", "fire"])
def test_relax_stops_at_the_first_step_below_fmax(tmp_path, optimizer):
    """Atoms on springs of different stiffness relax until the largest per-atom force norm falls below fmax
    (eV/Å): every frame before the last is still above it, the last below, and the summary reports that
    last force. The target is below ASE's default of 0.05, so a run that ignores it stops too early."""
    centres = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 4]], dtype=float)
    atoms = Atoms("H4", positions=centres + np.array([[0.3, 0.3, 0.3], [-0.12, 0, 0], [0, 0.05, -0.02],
                                                      [0, 0, 0.03]]))
    stiffness = np.array([[2.0], [5.0], [12.0], [30.0]])  # eV/Å^2: forces start near 1 eV/Å
    atoms.calc = HarmonicWells(centres, stiffness)
    summary = run_relax(atoms, fmax=0.01, steps=200, optimizer=optimizer, trajectory=tmp_path / "opt.traj",
                        progress=False)
    frames = read(tmp_path / "opt.traj", index=":")
    largest = [np.linalg.norm(stiffness * (frame.positions - centres), axis=1).max() for frame in frames]
    assert summary.converged and summary.steps == len(frames) - 1 > 5
    assert min(largest[:-1]) >= 0.01 > largest[-1]
    assert summary.fmax == pytest.approx(largest[-1])
    assert summary.final_energy < summary.initial_energy
