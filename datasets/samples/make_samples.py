"""Regenerate the shipped sample files from qm9pack (and tblite for the force frames).

    python datasets/samples/make_samples.py

Writes ``qm9_xyz/dsgdb9nsd_XXXXXX.xyz`` (31 QM9 molecules in the original
QM9 .xyz layout: the first 10, 20 drawn with seed 0 and the first with fluorine) and
``qm9_xtb_sample.extxyz`` (GFN2-xTB energies and forces of perturbed
configurations of three of them, made by the `geognn.data.xtb` recipe).
"""

import csv
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # byte-reproducible xTB labels (see datasets/qm9_xtb/README.md)

import numpy as np

from geognn.data.qm9 import _QM9PACK_FILES, qm9pack_data_dir

HERE = Path(__file__).resolve().parent
FIRST, DRAWN, SEED = 10, 20, 0
PROPERTY_COLUMNS = (
    "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au",
    "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au", "InternalEnergy_298K_au",
    "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au", "Heatcapacity_Cv_cal_mol_K",
)


def split_list(text):
    return [item.strip(" '\"") for item in text.strip("[]").replace("[", "").replace("]", "").split(",")]


def xyz_text(row):
    """One molecule in the layout of the QM9 paper's Table 2."""
    symbols, coords = split_list(row["Elements"]), split_list(row["XYZ_Ang"])
    charges = split_list(row["Mulliken_pop"])
    lines = [str(len(symbols)), "\t".join(["gdb " + row["Index"]] + [row[c] for c in PROPERTY_COLUMNS]) + "\t"]
    for k, symbol in enumerate(symbols):
        lines.append("\t".join([symbol, *coords[3 * k : 3 * k + 3], charges[k]]))
    lines.append("\t".join(split_list(row["Harmonic_Freq_cmi"])))
    lines.append(f"{row['SMILES']}\t{row['SMILES']}")
    lines.append(f"{row['InChi']}\t{row['InChi']}")
    return "\n".join(lines) + "\n"


def main():
    rows = []
    for name in _QM9PACK_FILES:
        with open(qm9pack_data_dir() / name, newline="") as handle:
            rows.extend(csv.DictReader(handle))
    drawn = np.random.default_rng(SEED).choice(np.arange(FIRST, len(rows)), DRAWN, replace=False)
    # QM9's fluorine molecules are rare (about 2%); ship the first one so that F is covered.
    fluorine = next(k for k, row in enumerate(rows) if "'F'" in row["Elements"])
    chosen = sorted({*range(FIRST), *drawn.tolist(), fluorine})
    out = HERE / "qm9_xyz"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for k in chosen:
        (out / rows[k]["XYZ_file"]).write_text(xyz_text(rows[k]))
    print(f"wrote {len(chosen)} molecules to {out}")

    from geognn.data.xtb import XTBRecipe, qm9_molecules, run_recipe

    recipe = XTBRecipe(num_molecules=3, rattles=2, md_snapshots=2, seed=SEED, chunk_size=3)
    with tempfile.TemporaryDirectory() as tmp:
        molecules = qm9_molecules(3, SEED, source=out, root=Path(tmp) / "qm9")
        written = run_recipe(molecules, Path(tmp) / "xtb", recipe, workers=1, progress=False)
        shutil.copy(written, HERE / "qm9_xtb_sample.extxyz")
    print(f"wrote {HERE / 'qm9_xtb_sample.extxyz'}")


if __name__ == "__main__":
    main()
