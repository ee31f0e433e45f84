"""Crystal physics of an fcc element with any ASE calculator: what a trained potential is checked against.

    from ase.calculators.emt import EMT
    from geognn.materials import crystal_properties, relative_errors

    reference = crystal_properties(EMT(), "Cu")             # a0_A, B_GPa, C11_GPa, ..., nu_X_TA_THz, E_vac_eV, ...
    model = crystal_properties(GeoGNNCalculator.from_checkpoint("runs/emt_painn", dtype="float64"), "Cu")
    relative_errors(model, reference)                        # percent, signed: model above reference is positive

Each quantity has its own function, returning a small dataclass of floats whose
field names carry the unit: `equation_of_state` (a0, B from a Birch–Murnaghan
fit of E(V)), `elastic_constants` (C11, C12, C44 from stress–strain),
`phonon_frequencies` (phonopy finite displacements, frequencies at Γ, X, L,
W, K, U), `vacancy_formation_energy` (relaxed and unrelaxed) and `nve_drift`
(velocity Verlet through `geognn.dynamics.run_md`). Only `elastic_constants`
needs the stress; everything else needs energies and forces.

The structure is always the fcc crystal of ``symbol`` at the lattice constant
given (the equation of state finds it): elements whose ground state is not fcc
(ASE's ``ase.data.reference_states``) are refused. This module uses the
calculator interface of ASE, ASE itself, phonopy (the ``materials`` extra,
imported only by `phonon_frequencies`) and `geognn.dynamics`; never the
training code.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.data import atomic_numbers, chemical_symbols, reference_states

# The primitive fcc cell of ase.build.bulk has the lattice vectors a/2 (0,1,1), (1,0,1), (1,1,0): the cubic
# cell's edges are these sums of them, so n times this matrix (in the primitive basis) is the n×n×n cubic supercell.
_CONVENTIONAL_IN_PRIMITIVE = np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])
# fcc Brillouin-zone points, in the reduced coordinates of the primitive cell's reciprocal lattice (ASE's names).
FCC_POINTS = {"G": (0.0, 0.0, 0.0), "X": (0.5, 0.0, 0.5), "L": (0.5, 0.5, 0.5), "W": (0.5, 0.25, 0.75),
              "K": (0.375, 0.375, 0.75), "U": (0.625, 0.25, 0.625)}
_POINT_ALIASES = {"Γ": "G", "GAMMA": "G"}
# Points on the high-symmetry lines Γ-X and Γ-L, where two transverse branches are degenerate and one is longitudinal.
_TA_LA_POINTS = ("X", "L")
PROPERTIES = ("eos", "elastic", "phonons", "vacancy", "nve", "npt")
# ASE's equations of state whose third fitted parameter is B' = dB/dP.
EOS_FORMS = ("birchmurnaghan", "murnaghan", "birch", "vinet", "pouriertarantola")
# Keys whose percent error means nothing: the energy's zero is the potential's convention (EMT puts its
# equilibrium crystal near 0 eV), and an energy-conserving reference drifts by about nothing.
_ABSOLUTE_ONLY = ("E0_eV_atom", "drift_meV_atom")


# ---------------------------------------------------------------------------------------- input checks


def fcc_reference(symbol: str) -> float:
    """ASE's tabulated fcc lattice constant of ``symbol`` (Å), after checking that its ground state is fcc.

    Raises `ValueError` for an unknown symbol or an element whose crystal is not fcc (bcc Fe, hcp Mg, ...).
    """
    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(f"{symbol!r} is not a chemical symbol; give one such as 'Cu' or 'Al'")
    state = reference_states[atomic_numbers[symbol]]
    structure = (state or {}).get("symmetry")
    if structure != "fcc":
        fcc = ", ".join(s for z, s in enumerate(chemical_symbols)
                        if (reference_states[z] or {}).get("symmetry") == "fcc")
        raise ValueError(f"{symbol}'s crystal is {structure or 'not tabulated'}, not fcc (cubic close-packed); "
                         f"geognn.materials computes fcc crystals, whose Brillouin-zone points and cubic elastic "
                         f"constants it assumes: give one of {fcc}")
    return float(state["a"])


def _check_lattice(a0: float) -> float:
    try:
        value = float(a0)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the lattice constant must be a positive number of Å, got {a0!r}")
    return value


def _crystal(symbol: str, a0: float, calc, cubic: bool, repeat: int = 1) -> Atoms:
    """The fcc crystal of ``symbol``: primitive (1 atom) or conventional cubic (4 atoms), repeated, calculator attached."""
    fcc_reference(symbol)
    atoms = bulk(symbol, "fcc", a=_check_lattice(a0), cubic=cubic)
    if repeat != 1:
        atoms = atoms.repeat(repeat)
    atoms.calc = calc
    return atoms


def _relax_positions(atoms: Atoms, fmax: float, max_steps: int, what: str):
    """BFGS on the positions at fixed cell; a relaxation that does not converge warns with ``what`` and goes on."""
    from geognn.dynamics import run_relax

    summary = run_relax(atoms, fmax=fmax, steps=max_steps, optimizer="bfgs", progress=False)
    if not summary.converged:
        warnings.warn(f"{what}: BFGS stopped after {summary.steps} steps with largest force {summary.fmax:.4f} eV/Å "
                      f"(target {fmax}); raise max_steps or fmax", RuntimeWarning, stacklevel=3)
    return summary


# ---------------------------------------------------------------------------------------- equation of state


@dataclass
class EOSResult:
    """The Birch–Murnaghan fit of E(V) of the primitive cell (one atom).

    Attributes:
        a0_A: lattice constant of the cubic cell at the energy minimum (Å).
        B_GPa: bulk modulus V d²E/dV² at a0 (GPa).
        B_prime: its pressure derivative dB/dP at a0 (dimensionless).
        E0_eV_atom: energy per atom at a0 (eV), in the calculator's own energy zero.
        volumes_A3_atom: the volumes of the final fit (Å³ per atom).
        energies_eV_atom: the energies there (eV per atom).
    """

    a0_A: float
    B_GPa: float
    B_prime: float
    E0_eV_atom: float
    volumes_A3_atom: list[float]
    energies_eV_atom: list[float]


def equation_of_state(calc, symbol: str, a_guess: float | None = None, strain: float = 0.01, points: int = 7,
                      coarse_strain: float = 0.06, max_passes: int = 4, eos: str = "birchmurnaghan") -> EOSResult:
    """Lattice constant, bulk modulus and energy per atom from E(V) of the one-atom primitive cell.

    A first pass fits ``points`` energies over ``±coarse_strain`` (linear strain, so ±6 % on a is about ±18 %
    in volume) around ``a_guess`` (default: ASE's tabulated lattice constant), which finds the minimum even when
    the guess is a few per cent off; the final fit uses ``±strain`` around that minimum (±1 % on a, ±3 % in
    volume), recentred until the minimum lies in the middle half of the range. The narrow final range makes
    B the curvature at a0, which the elastic constants measure too: EMT's Al is not Birch–Murnaghan-shaped
    over wider ranges (its B from ±2 % is 0.9 % below (C11 + 2 C12)/3, from ±1 % 0.1 %). Only energies
    are used, so any calculator serves. ``eos`` is one of ASE's forms in `EOS_FORMS`. Raises `ValueError`
    when no energy minimum lies near ``a_guess``.
    """
    from ase.eos import EquationOfState

    a_guess = fcc_reference(symbol) if a_guess is None else _check_lattice(a_guess)
    if points < 5 or not 0 < strain < coarse_strain < 0.3:
        raise ValueError("the fit needs points >= 5 and 0 < strain < coarse_strain < 0.3")
    if eos not in EOS_FORMS:
        raise ValueError(f"unknown equation of state {eos!r}; choose one of {list(EOS_FORMS)}")
    atoms = _crystal(symbol, a_guess, calc, cubic=False)
    cell = atoms.cell.array.copy()
    centre, width = a_guess, coarse_strain
    for _ in range(max_passes):
        scales = 1.0 + np.linspace(-width, width, points)
        volumes, energies = [], []
        for scale in scales:
            atoms.set_cell(cell * (centre / a_guess) * scale, scale_atoms=True)
            volumes.append(atoms.get_volume())
            energies.append(atoms.get_potential_energy())
        lowest = int(np.argmin(energies))
        if lowest in (0, points - 1):  # no minimum inside the range: move towards the lower end and look again
            centre *= scales[lowest]
            continue
        fit = EquationOfState(volumes, energies, eos=eos)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE warns through its own plot hint when the fit is poor; checked below
            v0, e0, bulk_modulus = fit.fit(warn=False)
        a0 = (4.0 * v0) ** (1.0 / 3.0)
        if not (np.isfinite(a0) and bulk_modulus > 0):
            raise ValueError(f"the {eos} fit of {symbol}'s E(V) has no minimum (B = {bulk_modulus:.3g} eV/Å³)")
        inside = abs(a0 / centre - 1.0) < width / 2
        centre = a0
        if width == strain and inside:
            return EOSResult(float(a0), float(bulk_modulus / units.GPa), float(fit.eos_parameters[2]), float(e0),
                             [float(v) for v in volumes], [float(e) for e in energies])
        width = strain
    raise ValueError(f"no energy minimum of fcc {symbol} found within {max_passes} passes of E(V) around "
                     f"a = {a_guess:.3f} Å (last centre {centre:.3f} Å); give a better a_guess")


# ---------------------------------------------------------------------------------------- elastic constants


@dataclass
class ElasticResult:
    """Cubic elastic constants from stress–strain, and the 6×6 matrix they are averaged from (all GPa).

    Attributes:
        C11_GPa: mean of C11, C22, C33.
        C12_GPa: mean of C12, C13, C23 and their transposes.
        C44_GPa: mean of C44, C55, C66 (per engineering shear strain).
        B_GPa: (C11 + 2 C12) / 3, to compare with the equation of state's.
        matrix_GPa: C_ij in Voigt order xx, yy, zz, yz, xz, xy (row: stress, column: strain).
        cubic_deviation_GPa: the largest departure of ``matrix_GPa`` from the cubic form of
            C11, C12 and C44 (zeros elsewhere); near 0 for a model that respects the crystal's symmetry.
    """

    C11_GPa: float
    C12_GPa: float
    C44_GPa: float
    B_GPa: float
    matrix_GPa: list[list[float]]
    cubic_deviation_GPa: float


def _strained(atoms: Atoms, voigt: int, amount: float) -> Atoms:
    """A copy of ``atoms`` under one Voigt strain component; shears are engineering strains (ε_yz = amount / 2)."""
    strain = np.zeros((3, 3))
    if voigt < 3:
        strain[voigt, voigt] = amount
    else:
        i, j = [(1, 2), (0, 2), (0, 1)][voigt - 3]
        strain[i, j] = strain[j, i] = amount / 2
    strained = atoms.copy()
    strained.calc = atoms.calc
    strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return strained


def _stress(atoms: Atoms) -> np.ndarray:
    try:
        return atoms.get_stress(voigt=True)
    except (PropertyNotImplementedError, NotImplementedError) as err:
        raise ValueError(f"elastic constants need the stress, and {type(atoms.calc).__name__} does not compute it "
                         f"({err or type(err).__name__}); use a calculator with stress (GeoGNNCalculator has it "
                         "for periodic cells)") from None


def elastic_constants(calc, symbol: str, a0: float, strain: float = 0.005, relax: bool = True,
                      fmax: float = 1e-3, max_steps: int = 100) -> ElasticResult:
    """C11, C12 and C44 (GPa) of the conventional 4-atom cubic cell from central differences of stress.

    Each of the six Voigt strains is applied at ``+strain`` and ``-strain`` (shear as engineering strain γ,
    ε_ij = γ/2) and column j of C is (σ(+) - σ(-)) / (2 strain), with ASE's stress (positive under tension),
    so the error is of order strain² times the third-order constants (EMT: 0.02 % at the default 0.005,
    0.1 % at 0.01, 0.4 % at 0.02). C11, C12 and C44 are the averages of
    their three cubic-equivalent entries. With ``relax=True`` the atomic positions are relaxed (BFGS, at fixed
    strained cell) before the stress is read: the relaxed-ion constants. In monatomic fcc every atom is a
    centre of inversion, so forces vanish under any homogeneous strain and relaxation changes nothing (it
    costs one force evaluation per strain); the option serves models that break that symmetry.

    Raises `ValueError` when the calculator does not compute stress.
    """
    if not 0 < strain < 0.1:
        raise ValueError(f"strain must lie in (0, 0.1), got {strain}")
    atoms = _crystal(symbol, a0, calc, cubic=True)
    _stress(atoms)  # refuse a calculator without stress before any strained cell
    matrix = np.zeros((6, 6))
    for voigt in range(6):
        stresses = []
        for sign in (1.0, -1.0):
            strained = _strained(atoms, voigt, sign * strain)
            if relax:
                _relax_positions(strained, fmax, max_steps, f"elastic constants, strain {voigt} {sign * strain:+g}")
            stresses.append(_stress(strained))
        matrix[:, voigt] = (stresses[0] - stresses[1]) / (2 * strain)
    matrix /= units.GPa
    c11 = float(np.mean(np.diag(matrix)[:3]))
    c12 = float(np.mean(matrix[:3, :3][~np.eye(3, dtype=bool)]))
    c44 = float(np.mean(np.diag(matrix)[3:]))
    cubic = np.zeros((6, 6))
    cubic[:3, :3] = c12
    cubic[np.arange(3), np.arange(3)] = c11
    cubic[np.arange(3, 6), np.arange(3, 6)] = c44
    return ElasticResult(c11, c12, c44, (c11 + 2 * c12) / 3, matrix.round(6).tolist(),
                         float(np.abs(matrix - cubic).max()))


# ---------------------------------------------------------------------------------------- phonons


def _import_phonopy():
    try:
        import phonopy
    except ImportError as err:
        raise ImportError(f"phonon frequencies need phonopy ({err}); install it with "
                          "pip install \"geognn[materials]\"") from None
    return phonopy


def _point_name(point: str) -> str:
    name = _POINT_ALIASES.get(point.upper(), point.upper()) if isinstance(point, str) else point
    if name not in FCC_POINTS:
        raise ValueError(f"unknown fcc Brillouin-zone point {point!r}; choose among {list(FCC_POINTS)} "
                         "('G' is Γ)")
    return name


def phonon_frequencies(calc, symbol: str, a0: float, supercell: int = 2, displacement: float = 0.01,
                       points: Sequence[str] = ("X", "L")) -> dict[str, list[float]]:
    """Harmonic phonon frequencies (THz, ascending) at fcc Brillouin-zone points, by phonopy's finite displacements.

    The force constants come from the ``supercell``×``supercell``×``supercell`` conventional cubic supercell
    (4 supercell³ atoms; 32 for the default 2) in which one atom is displaced by ``±displacement`` Å (central
    differences, so the error is of order displacement²; phonopy's symmetry completes the other directions).
    At a wave vector commensurate with the supercell the frozen phonon is periodic in it, so the frequency is
    exact for any range of the potential, message passing over several layers included: the 2×2×2 cell is
    commensurate with Γ, X, L and W. K and U need supercell 4; elsewhere phonopy interpolates and this function
    warns. ``points`` are ASE's names ('G' or 'Γ', 'X', 'L', 'W', 'K', 'U'); each maps to the three branches
    sorted ascending (at X and L: the twofold degenerate transverse branch, then the longitudinal one).
    Imaginary frequencies are negative, as phonopy reports them.

    Needs phonopy (``pip install "geognn[materials]"``); raises `ImportError` saying so when it is missing.
    """
    _import_phonopy()
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    names = [_point_name(point) for point in points]
    if not names:
        raise ValueError("give at least one Brillouin-zone point")
    if int(supercell) != supercell or supercell < 1 or not 0 < displacement < 0.2:
        raise ValueError("supercell must be a positive integer and displacement (Å) in (0, 0.2)")
    primitive = _crystal(symbol, a0, None, cubic=False)
    unitcell = PhonopyAtoms(symbols=primitive.get_chemical_symbols(), cell=primitive.cell.array,
                            scaled_positions=primitive.get_scaled_positions(), masses=primitive.get_masses())
    matrix = int(supercell) * _CONVENTIONAL_IN_PRIMITIVE
    phonon = Phonopy(unitcell, supercell_matrix=matrix, primitive_matrix=None)
    phonon.generate_displacements(distance=displacement, is_plusminus=True)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        atoms = Atoms(displaced.symbols, cell=displaced.cell, scaled_positions=displaced.scaled_positions, pbc=True)
        atoms.calc = calc
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    qpoints = np.array([FCC_POINTS[name] for name in names])
    remainder = np.abs(qpoints @ matrix.T - np.round(qpoints @ matrix.T)).max(axis=1)
    interpolated = [name for name, off in zip(names, remainder) if off > 1e-8]
    if interpolated:
        warnings.warn(f"{', '.join(interpolated)} not commensurate with the {supercell}×{supercell}×{supercell} "
                      "conventional supercell: phonopy interpolates the frequencies there; converge them in "
                      "supercell (K and U need 4)", RuntimeWarning, stacklevel=2)
    phonon.run_qpoints(qpoints)
    try:
        frequencies = phonon.qpoints.frequencies  # phonopy 4 deprecates get_qpoints_dict
    except AttributeError:
        frequencies = phonon.get_qpoints_dict()["frequencies"]
    frequencies = np.sort(frequencies, axis=1)
    return {name: [float(f) for f in row] for name, row in zip(names, frequencies)}


# ---------------------------------------------------------------------------------------- vacancy


@dataclass
class VacancyResult:
    """Vacancy formation energy at constant volume.

    Attributes:
        E_vac_eV: with relaxed positions when ``relax=True``, else the unrelaxed value (eV).
        E_vac_unrelaxed_eV: with every atom on its perfect-lattice site (eV).
        num_atoms: N, the atoms of the perfect supercell.
        relax_steps: BFGS steps of the relaxation (0 without).
    """

    E_vac_eV: float
    E_vac_unrelaxed_eV: float
    num_atoms: int
    relax_steps: int


def vacancy_formation_energy(calc, symbol: str, a0: float, size: int = 3, relax: bool = True, fmax: float = 0.01,
                             max_steps: int = 200) -> VacancyResult:
    """E_v = E(N-1) - (N-1)/N E(N) of one vacancy in the ``size``³ conventional supercell (N = 4 size³) at ``a0``.

    The cell stays fixed (the constant-volume formation energy); with ``relax=True`` the N-1 positions are
    relaxed by BFGS to ``fmax`` (eV/Å). The default 3×3×3 (108 atoms) puts periodic images of the vacancy
    3 a0 apart: EMT's relaxed value moves by 0.004 eV (Cu) and 0.005 eV (Al) from size 2 to 3, and by less
    than 0.001 eV from 3 to 4 (and from fmax 0.01 to 0.001).
    """
    if int(size) != size or size < 2:
        raise ValueError("size must be an integer >= 2 (the conventional cell repeated size times per direction)")
    perfect = _crystal(symbol, a0, calc, cubic=True, repeat=int(size))
    energy = perfect.get_potential_energy()
    defect = perfect.copy()
    del defect[0]
    defect.calc = calc
    count = len(perfect)
    unrelaxed = defect.get_potential_energy() - (count - 1) / count * energy
    steps = 0
    if relax:
        steps = _relax_positions(defect, fmax, max_steps, f"{symbol} vacancy").steps
    relaxed = defect.get_potential_energy() - (count - 1) / count * energy
    return VacancyResult(float(relaxed), float(unrelaxed), count, steps)


# ---------------------------------------------------------------------------------------- NVE


@dataclass
class NVEResult:
    """Energy conservation of velocity-Verlet NVE.

    Attributes:
        drift_meV_atom: total energy at the end minus at the start, per atom (meV/atom).
        mean_temperature_K: over the logged steps (K).
        time_fs: simulated time (fs).
        num_atoms: atoms in the periodic supercell.
    """

    drift_meV_atom: float
    mean_temperature_K: float
    time_fs: float
    num_atoms: int


def nve_drift(calc, symbol: str, a0: float, temperature_K: float = 300.0, steps: int = 250,
              timestep_fs: float = 2.0, size: int = 3, seed: int = 0) -> NVEResult:
    """Total-energy drift per atom (meV/atom) of velocity-Verlet NVE in the ``size``³ conventional supercell.

    The crystal starts on its lattice sites at ``a0`` with Maxwell–Boltzmann velocities of ``temperature_K``
    (equipartition then brings the mean temperature to about half of it); `geognn.dynamics.run_md` runs it.
    The default is 0.5 ps in 2 fs steps (the shortest phonon period of Cu or Al is about 120 fs). With
    smooth, conservative forces the change is velocity Verlet's own bounded error, which scales as the
    time step squared: EMT's Cu gives 0.018 meV/atom at 2 fs (0.0044 at 1 fs, 0.071 at 4 fs; Al 0.026 at
    2 fs). A model that gives
    much more has forces that are not the gradient of its energy, or an energy that is rough (at the
    cutoff, or between training configurations).
    """
    from geognn.dynamics import run_md

    if int(size) != size or size < 1:
        raise ValueError("size must be a positive integer")
    atoms = _crystal(symbol, a0, calc, cubic=True, repeat=int(size))
    summary = run_md(atoms, steps=steps, timestep_fs=timestep_fs, temperature_K=temperature_K, thermostat="nve",
                     seed=seed, progress=False)
    return NVEResult(float(1000.0 * summary.drift_per_atom), float(summary.mean_temperature),
                     float(summary.time_fs), len(atoms))


@dataclass
class NPTResult:
    volume_A3_atom: float  # mean over the second half of the run
    pressure_GPa: float  # mean over the second half (kinetic part included)
    temperature_K: float  # mean over every logged step
    num_atoms: int


def npt_volume(calc, symbol: str, a0: float, temperature_K: float = 300.0, pressure_GPa: float = 0.0,
               steps: int = 400, timestep_fs: float = 5.0, barostat_fs: float = 300.0, size: int = 2,
               seed: int = 0) -> NPTResult:
    """The volume per atom the crystal settles at under ``pressure_GPa`` and ``temperature_K``:
    `geognn.dynamics.run_md` with ``thermostat="npt"`` (ASE's LangevinBAOAB, isotropic cell) in the
    ``size``³ conventional supercell from the lattice constant ``a0``, averaged over the second
    half of the run. The defaults (32 atoms, 2 ps) put EMT's Cu within 0.2% of its zero-pressure
    volume at 300 K from fixed-cell runs (tests/test_npt.py); thermal expansion is then the
    difference from a0³/4.
    """
    from geognn.dynamics import run_md

    if int(size) != size or size < 1:
        raise ValueError("size must be a positive integer")
    atoms = _crystal(symbol, a0, calc, cubic=True, repeat=int(size))
    summary = run_md(atoms, steps=steps, timestep_fs=timestep_fs, temperature_K=temperature_K, thermostat="npt",
                     pressure_GPa=pressure_GPa, barostat_fs=barostat_fs, seed=seed, progress=False)
    return NPTResult(float(summary.mean_volume_per_atom), float(summary.mean_pressure),
                     float(summary.mean_temperature), len(atoms))


# ---------------------------------------------------------------------------------------- all of it


def crystal_properties(calc, symbol: str, a_guess: float | None = None,
                       include: Sequence[str] = PROPERTIES, phonon_points: Sequence[str] = ("X", "L"),
                       phonon_supercell: int = 2, vacancy_size: int = 3, md_steps: int = 250,
                       md_timestep_fs: float = 2.0, md_temperature_K: float = 300.0,
                       npt_steps: int = 400) -> dict[str, float]:
    """Everything above for fcc ``symbol`` at the calculator's own lattice constant, as one flat dict of floats.

    The equation of state always runs (it gives a0, at which the rest is computed). Keys, by ``include``:
    ``eos``: a0_A, B_GPa, B_prime, E0_eV_atom; ``elastic``: C11_GPa, C12_GPa, C44_GPa, B_elastic_GPa;
    ``phonons``: nu_X_TA_THz, nu_X_LA_THz, nu_L_TA_THz, nu_L_LA_THz (TA the mean of the two transverse
    branches) and for the other points nu_W_1_THz ... nu_W_3_THz (ascending); ``vacancy``: E_vac_eV,
    E_vac_unrelaxed_eV; ``nve``: drift_meV_atom; ``npt``: V_npt_A3_atom, the volume per atom at
    ``md_temperature_K`` and 0 GPa (`npt_volume`). ``seconds`` is the wall time of the whole.

    The defaults cost about 290 evaluations, 250 of them the 108-atom MD: EMT takes a few seconds, a
    geognn PaiNN of 160k (590k) parameters in float64 about 45 s (75 s) of one CPU core, and 100 s (160 s)
    on two cores that other jobs kept busy. Drop ``"phonons"`` from ``include`` without phonopy, and
    ``"elastic"`` for a calculator without stress.
    """
    unknown = sorted(set(include) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"unknown properties {unknown}; choose among {list(PROPERTIES)}")
    start = time.perf_counter()
    eos = equation_of_state(calc, symbol, a_guess)
    a0 = eos.a0_A
    result = {"a0_A": a0, "B_GPa": eos.B_GPa, "B_prime": eos.B_prime, "E0_eV_atom": eos.E0_eV_atom}
    if "elastic" in include:
        elastic = elastic_constants(calc, symbol, a0)
        result.update(C11_GPa=elastic.C11_GPa, C12_GPa=elastic.C12_GPa, C44_GPa=elastic.C44_GPa,
                      B_elastic_GPa=elastic.B_GPa)
    if "phonons" in include:
        for name, frequencies in phonon_frequencies(calc, symbol, a0, supercell=phonon_supercell,
                                                    points=phonon_points).items():
            if name in _TA_LA_POINTS:
                result[f"nu_{name}_TA_THz"] = float(np.mean(frequencies[:2]))
                result[f"nu_{name}_LA_THz"] = frequencies[2]
            else:
                result.update({f"nu_{name}_{branch}_THz": f for branch, f in enumerate(frequencies, start=1)})
    if "vacancy" in include:
        vacancy = vacancy_formation_energy(calc, symbol, a0, size=vacancy_size)
        result.update(E_vac_eV=vacancy.E_vac_eV, E_vac_unrelaxed_eV=vacancy.E_vac_unrelaxed_eV)
    if "nve" in include:
        result["drift_meV_atom"] = nve_drift(calc, symbol, a0, temperature_K=md_temperature_K, steps=md_steps,
                                             timestep_fs=md_timestep_fs).drift_meV_atom
    if "npt" in include:
        result["V_npt_A3_atom"] = npt_volume(calc, symbol, a0, temperature_K=md_temperature_K,
                                             steps=npt_steps).volume_A3_atom
    result["seconds"] = time.perf_counter() - start
    return result


def relative_errors(props: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """Signed percent error 100 (model - reference) / |reference| of every quantity both dicts hold.

    Positive means the model's value is the larger. Left out: ``seconds``, and E0_eV_atom and
    drift_meV_atom, whose reference values sit near an arbitrary or vanishing zero (compare those as
    differences). A reference of exactly 0 gives NaN.
    """
    return {key: signed_percent(value, reference[key]) for key, value in props.items()
            if key != "seconds" and key not in _ABSOLUTE_ONLY and key in reference}


def signed_percent(value: float, reference: float) -> float:
    """100 (value - reference) / |reference|; NaN for a reference of 0."""
    reference = float(reference)
    return 100.0 * (float(value) - reference) / abs(reference) if reference != 0 else float("nan")


__all__ = ["equation_of_state", "elastic_constants", "phonon_frequencies", "vacancy_formation_energy", "nve_drift",
           "npt_volume", "NPTResult",
           "crystal_properties", "relative_errors", "signed_percent", "fcc_reference", "EOSResult", "ElasticResult",
           "VacancyResult", "NVEResult", "FCC_POINTS", "PROPERTIES", "EOS_FORMS"]
