"""Unit factors against independent sources: ASE's CODATA tables and the SI definitions."""

import pytest
from ase.units import create_units

from geognn.data import units

CODATA_2018 = create_units("2018")


def test_hartree_and_bohr_are_codata_2018():
    """Every QM9 energy (Hartree) and length (Bohr) goes through these two factors; compared with
    ASE's CODATA 2018 table, which derives them from other constants and agrees to 1e-11 (a wrong
    digit among the first ten fails)."""
    assert units.HARTREE_TO_EV == pytest.approx(CODATA_2018["Hartree"], rel=1e-10)
    assert units.BOHR_TO_ANGSTROM == pytest.approx(CODATA_2018["Bohr"], rel=1e-10)


def test_per_mole_energies_use_the_thermochemical_calorie():
    """kcal/mol is 4184 J/mol (thermochemical, as MD17 and most force fields use, and ASE's
    ``kcal``), not the 4186.8 J of the international table; kJ/mol is 1000 J/mol."""
    assert units.KCAL_PER_MOL_TO_EV == pytest.approx(CODATA_2018["kcal"] / CODATA_2018["mol"], rel=1e-12)
    assert units.KJ_PER_MOL_TO_EV == pytest.approx(CODATA_2018["kJ"] / CODATA_2018["mol"], rel=1e-12)
    assert units.KCAL_PER_MOL_TO_EV == pytest.approx(0.0433641, rel=1e-6)  # the value every paper quotes
    for name, factor in units.ENERGY_UNITS.items():
        assert units.energy_unit_factor(name) == factor
    assert units.ENERGY_UNITS["meV"] == 1e-3 and units.ENERGY_UNITS["Hartree"] == units.HARTREE_TO_EV
