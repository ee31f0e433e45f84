"""`geognn.materials`: crystal physics of fcc Cu and Al with ASE's EMT, each quantity checked by a route
independent of the one the module takes (cell relaxation, energy–strain curvature, ASE's own phonon code,
an energy-zero shift, a length-rescaled potential)."""

import sys

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from geognn.materials import (FCC_POINTS, crystal_properties, elastic_constants, equation_of_state,
                              fcc_reference, npt_volume, nve_drift, phonon_frequencies, relative_errors,
                              vacancy_formation_energy)

SYMBOLS = ["Cu", "Al"]
FAST = dict(vacancy_size=2, md_steps=40, npt_steps=40)  # crystal_properties settings that keep the tests short


class ShiftedEMT(EMT):
    """EMT plus a constant energy per atom: a potential with another energy zero (as a model with atomic
    reference energies has); every formation energy and force is unchanged."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["energy"] += self.shift * len(self.atoms)
        self.results["free_energy"] += self.shift * len(self.atoms)
        self.results["energies"] = self.results["energies"] + self.shift


class ScaledEMT(Calculator):
    """EMT with every length stretched by ``scale``: E(x) = E_EMT(x / scale). Its exact physics: a0 times
    scale, bulk modulus and elastic constants over scale³, frequencies over scale, the same vacancy energy.
    With ``forces_factor`` the forces are not the energy's gradient (a non-conservative potential)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, scale: float, forces_factor: float = 1.0, stress: bool = True):
        super().__init__()
        self.scale, self.forces_factor = scale, forces_factor
        if not stress:
            self.implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        shrunk = self.atoms.copy()
        shrunk.set_cell(self.atoms.cell.array / self.scale, scale_atoms=True)
        shrunk.calc = EMT()
        energy = shrunk.get_potential_energy()
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": self.forces_factor * shrunk.get_forces() / self.scale,
                        "stress": shrunk.get_stress() / self.scale ** 3}


@pytest.fixture(scope="module")
def eos():
    return {symbol: equation_of_state(EMT(), symbol) for symbol in SYMBOLS}


@pytest.fixture(scope="module")
def copper():
    return crystal_properties(EMT(), "Cu", **FAST)


# ---------------------------------------------------------------------------------- equation of state


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_lattice_constant_is_where_the_stress_vanishes(symbol, eos):
    """a0 from E(V) alone equals the cell that ASE's stress relaxes to (FrechetCellFilter), from a start 3 % off."""
    atoms = bulk(symbol, "fcc", a=1.03 * fcc_reference(symbol), cubic=True)
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-6, steps=200)
    assert eos[symbol].a0_A == pytest.approx(atoms.cell[0, 0], abs=2e-4)
    at_a0 = bulk(symbol, "fcc", a=eos[symbol].a0_A)
    at_a0.calc = EMT()
    assert np.abs(at_a0.get_stress()).max() / units.GPa < 0.02  # GPa
    assert eos[symbol].B_GPa > 0 and eos[symbol].E0_eV_atom == pytest.approx(at_a0.get_potential_energy(), abs=1e-6)


def test_equation_of_state_finds_the_minimum_from_a_poor_guess(eos):
    far = equation_of_state(EMT(), "Cu", a_guess=3.90)  # 8.6 % above EMT's a0: the minimum lies outside the first range
    assert far.a0_A == pytest.approx(eos["Cu"].a0_A, abs=2e-4) and far.B_GPa == pytest.approx(eos["Cu"].B_GPa, rel=1e-3)


# ---------------------------------------------------------------------------------- elastic constants


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_bulk_modulus_from_eos_equals_the_elastic_constants_one(symbol, eos):
    elastic = elastic_constants(EMT(), symbol, eos[symbol].a0_A)
    assert elastic.B_GPa == pytest.approx(eos[symbol].B_GPa, rel=0.01)
    assert elastic.cubic_deviation_GPa < 1e-3  # C is cubic: C11 = C22 = C33, C12 = C13 = C23, C44 = C55 = C66, rest 0
    assert elastic.C11_GPa > elastic.C12_GPa > 0 and elastic.C44_GPa > 0  # Born stability of a cubic crystal


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_elastic_constants_equal_the_curvature_of_the_energy(symbol, eos):
    """Energy route: E(γ)/V = E0/V + C44 γ²/2 under engineering shear γ, E(ε)/V = E0/V + C11 ε²/2 under ε_xx."""
    a0 = eos[symbol].a0_A
    elastic = elastic_constants(EMT(), symbol, a0, relax=False)
    atoms = bulk(symbol, "fcc", a=a0, cubic=True)
    amounts = np.linspace(-0.02, 0.02, 9)

    def curvature(deformation):
        energies = []
        for amount in amounts:
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + deformation(amount)), scale_atoms=True)
            strained.calc = EMT()
            energies.append(strained.get_potential_energy())
        return 2 * np.polyfit(amounts, energies, 4)[2] / atoms.get_volume() / units.GPa

    shear = curvature(lambda g: np.array([[0, 0, 0], [0, 0, g / 2], [0, g / 2, 0]]))
    stretch = curvature(lambda e: np.diag([e, 0, 0]))
    assert elastic.C44_GPa == pytest.approx(shear, rel=5e-3)
    assert elastic.C11_GPa == pytest.approx(stretch, rel=5e-3)
    relaxed = elastic_constants(EMT(), symbol, a0, relax=True)  # every fcc atom is an inversion centre: no change
    assert relaxed.C44_GPa == pytest.approx(elastic.C44_GPa, rel=1e-6)


def test_elastic_constants_refuse_a_calculator_without_stress(eos):
    with pytest.raises(ValueError, match="need the stress.*ScaledEMT"):
        elastic_constants(ScaledEMT(1.0, stress=False), "Cu", eos["Cu"].a0_A)


# ---------------------------------------------------------------------------------- phonons


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_phonons_equal_ase_phonons_at_x_and_l(symbol, eos, tmp_path):
    """phonopy on the 32-atom cubic supercell against ASE's own finite displacements on the 64-atom
    primitive one: both commensurate with X and L, so both exact there."""
    pytest.importorskip("phonopy", reason="phonon frequencies need phonopy: pip install \"geognn[materials]\"")
    from ase.phonons import Phonons

    a0 = eos[symbol].a0_A
    ours = phonon_frequencies(EMT(), symbol, a0, points=("G", "X", "L"))
    reference = Phonons(bulk(symbol, "fcc", a=a0), EMT(), supercell=(4, 4, 4), delta=0.01,
                        name=str(tmp_path / "phonons"))
    reference.run()
    reference.read(acoustic=True)
    energies = reference.band_structure([FCC_POINTS["X"], FCC_POINTS["L"]], verbose=False)  # eV
    theirs = np.sort(energies, axis=1) / (units._hplanck / units._e * 1e12)  # eV -> THz
    np.testing.assert_allclose([ours["X"], ours["L"]], theirs, rtol=2e-3)
    assert np.abs(ours["G"]).max() < 0.01  # acoustic modes at Γ: uniform translation costs nothing
    for point in ("X", "L"):  # two degenerate transverse branches below the longitudinal one
        assert ours[point][0] == pytest.approx(ours[point][1], rel=1e-6) and ours[point][2] > ours[point][1] > 1


def test_phonons_warn_where_the_supercell_is_not_commensurate(eos):
    pytest.importorskip("phonopy", reason="phonon frequencies need phonopy: pip install \"geognn[materials]\"")
    with pytest.warns(RuntimeWarning, match="K not commensurate"):
        phonon_frequencies(EMT(), "Cu", eos["Cu"].a0_A, points=("Γ", "W", "K"))
    with pytest.raises(ValueError, match="unknown fcc Brillouin-zone point 'H'"):
        phonon_frequencies(EMT(), "Cu", eos["Cu"].a0_A, points=("H",))


def test_phonons_without_phonopy_say_how_to_install_it(monkeypatch, eos):
    monkeypatch.setitem(sys.modules, "phonopy", None)  # makes `import phonopy` fail as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "geognn\[materials\]"'):
        phonon_frequencies(EMT(), "Cu", eos["Cu"].a0_A)


# ---------------------------------------------------------------------------------- vacancy and NVE


def test_vacancy_formation_energy(eos):
    a0 = eos["Cu"].a0_A
    small = vacancy_formation_energy(EMT(), "Cu", a0, size=2)
    assert 0 < small.E_vac_eV < small.E_vac_unrelaxed_eV and small.num_atoms == 32 and small.relax_steps > 0
    # another energy zero (3 eV per atom) changes E(N-1) and E(N) but not E(N-1) - (N-1)/N E(N)
    shifted = vacancy_formation_energy(ShiftedEMT(3.0), "Cu", a0, size=2, relax=False)
    assert shifted.E_vac_eV == pytest.approx(small.E_vac_unrelaxed_eV, abs=1e-8)
    assert shifted.E_vac_eV == shifted.E_vac_unrelaxed_eV and shifted.relax_steps == 0
    larger = vacancy_formation_energy(EMT(), "Cu", a0, size=3)
    assert larger.E_vac_eV == pytest.approx(small.E_vac_eV, abs=0.01)  # converged in the supercell


def test_nve_drift_is_small_for_emt_and_large_for_nonconservative_forces(eos):
    a0 = eos["Cu"].a0_A
    emt = nve_drift(EMT(), "Cu", a0, steps=100, size=2)
    assert abs(emt.drift_meV_atom) < 0.1 and 100 < emt.mean_temperature_K < 200  # equipartition: about 300 K / 2
    assert emt.num_atoms == 32 and emt.time_fs == pytest.approx(200.0)
    broken = nve_drift(ScaledEMT(1.0, forces_factor=1.2), "Cu", a0, steps=100, size=2)
    assert abs(broken.drift_meV_atom) > 10 * abs(emt.drift_meV_atom) + 1.0


def test_npt_volume_expands_with_temperature_and_follows_the_potential_scale(eos):
    """At 0 GPa the crystal settles above its 0 K volume and more so when hotter; EMT with every length
    stretched by 2 % settles at 1.02³ times the volume (the same statistics in scaled coordinates)."""
    a0 = eos["Cu"].a0_A
    cold = npt_volume(EMT(), "Cu", a0, temperature_K=50, steps=150)
    hot = npt_volume(EMT(), "Cu", a0, temperature_K=600, steps=150)
    assert a0 ** 3 / 4 < cold.volume_A3_atom < hot.volume_A3_atom
    assert cold.volume_A3_atom == pytest.approx(a0 ** 3 / 4, rel=0.005) and abs(cold.pressure_GPa) < 0.3
    stretched = npt_volume(ScaledEMT(1.02), "Cu", 1.02 * a0, temperature_K=50, steps=150)
    assert stretched.volume_A3_atom / cold.volume_A3_atom == pytest.approx(1.02 ** 3, rel=0.003)


# ---------------------------------------------------------------------------------- everything together


def test_crystal_properties_of_a_stretched_potential_have_the_exact_relative_errors(copper):
    """EMT with lengths stretched by 2 %: a0 +2 %, moduli and elastic constants 1/1.02³ - 1, phonon
    frequencies 1/1.02 - 1, vacancy energy unchanged; relative_errors must find exactly these."""
    pytest.importorskip("phonopy", reason="phonon frequencies need phonopy: pip install \"geognn[materials]\"")
    stretched = crystal_properties(ScaledEMT(1.02), "Cu", include=("eos", "elastic", "phonons", "vacancy"), **FAST)
    errors = relative_errors(stretched, copper)
    expected = {"a0_A": 2.0, "B_GPa": 100 * (1.02 ** -3 - 1), "C11_GPa": 100 * (1.02 ** -3 - 1),
                "C12_GPa": 100 * (1.02 ** -3 - 1), "C44_GPa": 100 * (1.02 ** -3 - 1),
                "B_elastic_GPa": 100 * (1.02 ** -3 - 1), "B_prime": 0.0, "E_vac_eV": 0.0, "E_vac_unrelaxed_eV": 0.0,
                **{f"nu_{p}_{b}_THz": 100 * (1 / 1.02 - 1) for p in "XL" for b in ("TA", "LA")}}
    assert set(errors) == set(expected)  # no drift (not computed) nor E0 (arbitrary zero), nor the timing
    for key, value in expected.items():
        assert errors[key] == pytest.approx(value, abs=0.05), key


def test_crystal_properties_and_relative_errors(copper, eos):
    assert copper["a0_A"] == pytest.approx(eos["Cu"].a0_A, abs=1e-6)
    assert copper["B_elastic_GPa"] == pytest.approx(copper["B_GPa"], rel=0.01)
    assert all(isinstance(value, float) for value in copper.values())
    assert "drift_meV_atom" in copper and copper["seconds"] > 0
    if "nu_X_TA_THz" in copper:  # phonopy installed
        assert copper["nu_X_LA_THz"] > copper["nu_X_TA_THz"] > copper["nu_L_TA_THz"] > 0
    errors = relative_errors(copper, copper)
    assert errors and all(value == 0 for value in errors.values())
    assert not {"seconds", "E0_eV_atom", "drift_meV_atom"} & set(errors)
    assert relative_errors({"B_GPa": 90.0}, {"B_GPa": 100.0}) == {"B_GPa": pytest.approx(-10.0)}
    assert relative_errors({"C12_GPa": -2.0}, {"C12_GPa": -1.0}) == {"C12_GPa": pytest.approx(-100.0)}


@pytest.mark.parametrize("symbol, message", [("Fe", "Fe's crystal is bcc, not fcc"), ("Mg", "Mg's crystal is hcp"),
                                             ("Cx", "not a chemical symbol")])
def test_non_fcc_or_unknown_elements_are_refused(symbol, message):
    for function in (lambda: equation_of_state(EMT(), symbol), lambda: elastic_constants(EMT(), symbol, 3.6),
                     lambda: vacancy_formation_energy(EMT(), symbol, 3.6),
                     lambda: nve_drift(EMT(), symbol, 3.6, steps=1)):
        with pytest.raises(ValueError, match=message):
            function()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="lattice constant must be a positive"):
        elastic_constants(EMT(), "Cu", -3.6)
    with pytest.raises(ValueError, match="unknown equation of state 'sj'"):
        equation_of_state(EMT(), "Cu", eos="sj")  # ASE's default form, which has no B' parameter
    with pytest.raises(ValueError, match="unknown properties"):
        crystal_properties(EMT(), "Cu", include=("eos", "band_gap"))
    with pytest.raises(ValueError, match="no energy minimum"):
        equation_of_state(ScaledEMT(1.0, stress=False), "Cu", a_guess=9.0, max_passes=2)  # atoms far apart: flat
