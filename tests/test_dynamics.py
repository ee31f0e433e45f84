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


def test_bad_input_gets_one_line(runs, structure, tmp_path, capsys):
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
    """Free atoms keep their Maxwell-Boltzmann velocities: the mean kinetic temperature is the one asked for,
    within the sampling spread of 3N velocities (relative sd sqrt(2 / 3N))."""
    atoms = _gas("Ar", 4000)
    summary = run_md(atoms, steps=20, timestep_fs=1.0, temperature_K=500, interval=10, progress=False)
    assert summary.mean_temperature == pytest.approx(500, rel=4 * np.sqrt(2 / (3 * len(atoms))))


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
