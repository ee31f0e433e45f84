"""Crystal physics columns for `geognn compare`: each trained model against a reference potential.

A comparison recipe may add::

    materials:
      reference: emt            # the calculator the data came from: emt, or module:Class (any ASE calculator)
      crystals: [Cu, Al]        # fcc elements of the training data
      properties: [eos, elastic, phonons, vacancy, nve, npt]
      temperature_K: 300        # of the NVE and NPT runs

Every finished run's best checkpoint then becomes a float64 `GeoGNNCalculator`, and
`geognn.materials.crystal_properties` gives its lattice constant, bulk modulus, elastic constants,
phonon frequencies at X and L, vacancy formation energy, NVE drift and NPT volume for each
crystal; the reference's own values are computed the same way. ``materials.json`` in each run
folder (and ``materials_reference.json`` in the comparison's) keeps them, recomputed only when
the settings change. The report gains a table of values with their signed errors against the
reference, and ``materials.csv`` one line per run and crystal: a force MAE alone can rank a model
first whose phonons are far off.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from geognn.training.config import ConfigError

# Quantities in the report's table: (key, header, format) — relative errors shown for all but drift.
COLUMNS = (
    ("a0_A", "a0 (Å)", "{:.4f}"),
    ("B_GPa", "B (GPa)", "{:.1f}"),
    ("C11_GPa", "C11", "{:.1f}"),
    ("C12_GPa", "C12", "{:.1f}"),
    ("C44_GPa", "C44", "{:.1f}"),
    ("nu_X_TA_THz", "X TA (THz)", "{:.3f}"),
    ("nu_X_LA_THz", "X LA", "{:.3f}"),
    ("nu_L_TA_THz", "L TA", "{:.3f}"),
    ("nu_L_LA_THz", "L LA", "{:.3f}"),
    ("E_vac_eV", "E_vac (eV)", "{:.3f}"),
    ("V_npt_A3_atom", "V(T) (Å³/atom)", "{:.3f}"),
    ("drift_meV_atom", "NVE drift (meV/atom)", "{:.3f}"),
)


@dataclass
class MaterialsSettings:
    """The ``materials:`` section of a comparison recipe (see the module doc)."""

    reference: str = "emt"
    crystals: list = field(default_factory=lambda: ["Cu"])
    properties: Optional[list] = None  # None: every one of geognn.materials.PROPERTIES
    temperature_K: float = 300.0

    def __post_init__(self):
        from geognn.materials import PROPERTIES, fcc_reference

        if not isinstance(self.crystals, list) or not self.crystals:
            raise ConfigError(f"materials.crystals: give a list of fcc elements, got {self.crystals!r}")
        for symbol in self.crystals:
            try:
                fcc_reference(symbol)
            except ValueError as err:
                raise ConfigError(f"materials.crystals: {err}") from None
        if self.properties is None:
            self.properties = list(PROPERTIES)
        unknown = sorted(set(self.properties) - set(PROPERTIES))
        if unknown:
            raise ConfigError(f"materials.properties: unknown {unknown}; choose among {list(PROPERTIES)}")
        if not self.temperature_K > 0:
            raise ConfigError(f"materials.temperature_K must be positive, got {self.temperature_K}")
        reference_calculator(self.reference)  # refuse a bad name before anything trains

    def key(self) -> dict:
        return dataclasses.asdict(self)


def reference_calculator(name: str):
    """A fresh ASE calculator: ``emt`` (ASE's EMT) or ``module:Class`` constructed without arguments."""
    if name.lower() == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    module, _, attribute = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)()
    except (ImportError, AttributeError, ValueError, TypeError) as err:
        raise ConfigError(f"materials.reference: cannot make the calculator {name!r} ({type(err).__name__}: {err}); "
                          "give emt or module:Class of an ASE calculator that needs no arguments") from None


def _properties(calc, settings: MaterialsSettings) -> dict:
    """crystal -> its properties, or ``{"error": why}`` where a model has no answer (e.g. no energy
    minimum: a result of the comparison, not a failure of it)."""
    from geognn.materials import crystal_properties

    values = {}
    for symbol in settings.crystals:
        try:
            values[symbol] = crystal_properties(calc, symbol, include=settings.properties,
                                                md_temperature_K=settings.temperature_K)
        except ValueError as err:
            values[symbol] = {"error": str(err)}
    return values


def _cached(path: Path, settings: MaterialsSettings, compute) -> dict:
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings.key():
            return stored["values"]
    values = compute()
    path.write_text(json.dumps({"settings": settings.key(), "values": values}, indent=2))
    return values


def reference_values(settings: MaterialsSettings, out: Path) -> dict:
    """The reference potential's properties per crystal (kept in ``out/materials_reference.json``)."""
    return _cached(out / "materials_reference.json", settings,
                   lambda: _properties(reference_calculator(settings.reference), settings))


def run_values(settings: MaterialsSettings, run_dir: Path) -> dict:
    """A run's properties per crystal, from its best checkpoint in float64 (kept in ``materials.json``)."""
    from geognn.calculator import GeoGNNCalculator

    def compute():
        calc = GeoGNNCalculator.from_checkpoint(run_dir, dtype="float64")
        return _properties(calc, settings)

    return _cached(Path(run_dir) / "materials.json", settings, compute)


def add_materials(settings: MaterialsSettings, rows: list[dict], out: Path, log=print) -> dict:
    """Compute (or read) the reference's and every run's properties; each row gains ``materials``
    (crystal -> values). Returns the reference's values."""
    out = Path(out)
    log(f"crystal physics of the reference ({settings.reference}) for {', '.join(settings.crystals)}")
    reference = reference_values(settings, out)
    for row in rows:
        log(f"crystal physics of {row['model']} seed {row['seed']}")
        row["materials"] = run_values(settings, Path(row["run_dir"]))
    return reference


def _cell(key: str, value: Optional[float], reference: Optional[float], template: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = template.format(value)
    if not reference or key == "drift_meV_atom":  # no reference, or none to take a ratio to
        return text
    from geognn.materials import signed_percent

    return f"{text} ({signed_percent(value, reference):+.1f}%)"


def materials_lines(settings: MaterialsSettings, rows: list[dict], reference: dict) -> list[str]:
    """The report's table: the reference's values, then each run's with its signed error (mean over
    seeds when a model has several)."""
    present = [(key, header, template) for key, header, template in COLUMNS
               if any(key in values for values in reference.values())]
    lines = [f"Each model's best checkpoint (float64) against {settings.reference} on fcc "
             f"{', '.join(settings.crystals)}: values, and in brackets the signed error against the reference. "
             f"V(T): volume per atom in NPT at {settings.temperature_K:g} K and 0 GPa; NVE drift: total-energy "
             "change per atom over 0.5 ps at 2 fs (`geognn.materials`).", "",
             "| model | crystal | " + " | ".join(header for _, header, _ in present) + " |",
             "| --- | --- |" + " ---: |" * len(present)]
    for symbol in settings.crystals:
        ref = reference[symbol]
        cells = [_cell(key, ref.get(key), None, template) for key, _, template in present]
        lines.append(f"| **{settings.reference}** | {symbol} | " + " | ".join(cells) + " |")
        for label in dict.fromkeys(row["model"] for row in rows if "materials" in row):
            every = [row["materials"][symbol] for row in rows if row["model"] == label and "materials" in row]
            runs = [run for run in every if "error" not in run]
            if not runs:
                why = every[0]["error"].replace("|", "/")
                lines.append(f"| {label} | {symbol} | {why} |" + " |" * (len(present) - 1))
                continue
            cells = []
            for key, _, template in present:
                values = [run[key] for run in runs if key in run]
                mean = sum(values) / len(values) if values else None
                cells.append(_cell(key, mean, ref.get(key), template))
            lines.append(f"| {label} | {symbol} | " + " | ".join(cells) + " |")
    return lines


def write_materials_csv(rows: list[dict], reference: dict, path: Path, settings: MaterialsSettings) -> Path:
    import csv

    keys = sorted({key for values in reference.values() for key in values})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "seed", "crystal"] + keys + ["error"])
        for symbol in settings.crystals:
            writer.writerow([settings.reference, "", symbol] + [reference[symbol].get(key, "") for key in keys + ["error"]])
            for row in rows:
                if "materials" in row:
                    values = row["materials"][symbol]
                    writer.writerow([row["model"], row["seed"], symbol] + [values.get(key, "") for key in keys + ["error"]])
    return path


__all__ = ["MaterialsSettings", "reference_calculator", "reference_values", "run_values", "add_materials",
           "materials_lines", "write_materials_csv", "COLUMNS"]
