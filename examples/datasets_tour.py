"""Load QM9 and force-labelled data, split them, and compute normalisation statistics.

    python examples/datasets_tour.py            # the shipped samples (seconds)
    python examples/datasets_tour.py --full     # all of QM9 from qm9pack (pip install "geognn[qm9]")

Every loader reads local files; the samples live in datasets/samples/.
"""

import sys
import tempfile
from pathlib import Path

from torch_geometric.loader import DataLoader

from geognn.data import QM9, ASEDataset, avg_num_neighbors, fit_element_energies, force_rms
from geognn.data.qm9 import UNITS

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "samples"
full = "--full" in sys.argv[1:]

with tempfile.TemporaryDirectory() as cache:
    # QM9: from qm9pack (all 130,831 molecules) or from original-format .xyz files.
    source = None if full else SAMPLES / "qm9_xyz"
    qm9 = QM9(Path("data/qm9") if full else cache, target="U0_atom", source=source, progress=full)
    train, val, test = qm9.split("dimenet" if full else (0.8, 0.1, None), seed=42)
    print(f"{qm9}: train {len(train)}, validation {len(val)}, test {len(test)}")
    methane = qm9[0]
    print(f"molecule {int(methane.idx)}: z={methane.z.tolist()}, U0_atom energy {methane.energy.item():.4f} {UNITS['U0_atom']}")
    batch = next(iter(DataLoader(train, batch_size=4, shuffle=True)))
    print(f"a batch: {batch.num_graphs} molecules, {batch.num_nodes} atoms, energy {batch.energy.shape}")
    # Per-element energies by least squares on composition: a model's starting reference.
    references = fit_element_energies(train)
    print("per-element U0_atom (eV):", {z: round(e, 3) for z, e in enumerate(references.tolist()) if e})

# Energy + force data from any ASE-readable file (here GFN2-xTB labels of perturbed QM9 geometries).
frames = ASEDataset(SAMPLES / "qm9_xtb_sample.extxyz")
print(f"{frames}: force RMS {force_rms(frames):.3f} eV/Å, "
      f"{avg_num_neighbors(frames, cutoff=5.0):.1f} neighbours within 5 Å on average")
