"""Unit conversions used by the dataset loaders (source units -> eV, Å).

Energies are converted with CODATA 2018 values; the 2019 SI fixes the
elementary charge and the Avogadro constant exactly, so the per-mole factors
below are exact.
"""

HARTREE_TO_EV = 27.211386245988  # CODATA 2018 Hartree energy in eV
BOHR_TO_ANGSTROM = 0.529177210903  # CODATA 2018 Bohr radius in Å

_ELEMENTARY_CHARGE = 1.602176634e-19  # C, exact
_AVOGADRO = 6.02214076e23  # 1/mol, exact
KCAL_PER_MOL_TO_EV = 4184.0 / (_AVOGADRO * _ELEMENTARY_CHARGE)  # thermochemical calorie
KJ_PER_MOL_TO_EV = 1000.0 / (_AVOGADRO * _ELEMENTARY_CHARGE)

# Accepted names of energy units, with their factor to eV.
ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": HARTREE_TO_EV,
    "kcal/mol": KCAL_PER_MOL_TO_EV,
    "kJ/mol": KJ_PER_MOL_TO_EV,
}


def energy_unit_factor(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV; a clear error for unknown names."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown energy unit {unit!r}; choose one of {sorted(ENERGY_UNITS)}") from None


def display_unit(unit: str) -> tuple[float, str]:
    """(factor, unit) in which errors are reported: eV as meV, any other unit as it is."""
    return (1000.0, "meV") if unit == "eV" else (1.0, unit)
