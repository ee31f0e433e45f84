"""Reference outputs of mace-torch for geognn's MACE tests; run in mace-torch's own virtual environment.

mace-torch pins e3nn 0.4.4 and cannot share geognn's environment (e3nn 0.6).
This script builds a few small ``ScaleShiftMACE`` models in float64 with
mace-torch's defaults for the blocks (RealAgnosticResidualInteractionBlock,
silu), evaluates them on QM9 molecules and a periodic cell, and saves plain
tensors: each model's hyperparameters, its state dict (without the coupling
buffers ``U_matrix_*``, which geognn recomputes), the structures, and
mace-torch's energies, forces and stress. It also saves e3nn 0.4.4's Wigner
3j symbols (whole up to l = 3, their largest component up to l = 11), against
which the tests check geognn's table of the symbols whose sign 0.4.4 and 0.6
do not share.

    python -m venv .venv-mace
    .venv-mace/bin/pip install torch==2.13.0 mace-torch==0.3.16
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 .venv-mace/bin/python benchmarks/mace_reference.py

writes ``tests/models/data/mace_reference.pt`` (read by tests/models/test_mace.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "samples" / "qm9_xtb_sample.extxyz"
ELEMENTS = [1, 6, 7, 8, 9]

# Small models covering what the conversion must get right: l = 1 and l = 2 hidden features,
# correlation 1 to 4, one to three layers, the nonlinear last readout.
MODELS = {
    "l1_corr3": dict(hidden_irreps="8x0e + 8x1o", max_ell=3, correlation=3, num_interactions=2,
                     radial_MLP=[16, 16], MLP_irreps="4x0e"),
    "l2_corr2": dict(hidden_irreps="4x0e + 4x1o + 4x2e", max_ell=2, correlation=2, num_interactions=3,
                     radial_MLP=[8], MLP_irreps="8x0e"),
    "scalar_corr4": dict(hidden_irreps="4x0e", max_ell=2, correlation=4, num_interactions=2,
                         radial_MLP=[8, 8], MLP_irreps="4x0e"),
    "one_layer_corr1": dict(hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=1, num_interactions=1,
                            radial_MLP=[8], MLP_irreps="4x0e"),
}
SHARED = dict(r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, avg_num_neighbors=7.5,
              atomic_inter_scale=1.3, atomic_inter_shift=-0.2)


def structures() -> list:
    molecules = ase.io.read(SAMPLE, index=":4")
    rng = np.random.default_rng(0)
    crystal = ase.build.bulk("C", "diamond", a=3.57, cubic=True)  # 8 atoms, every neighbour an image
    crystal.positions += rng.normal(scale=0.1, size=crystal.positions.shape)
    crystal.numbers[[1, 5]] = [7, 1]
    crystal.set_cell(crystal.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.03], [0.02, 0.0, 1.0]]),
                     scale_atoms=True)
    return [*molecules, crystal]


def build(name: str, seed: int):
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    options = {**SHARED, **MODELS[name]}
    hyper = dict(options, atomic_numbers=ELEMENTS,
                 atomic_energies=(torch.arange(len(ELEMENTS), dtype=torch.float64) * -0.01 - 0.02).tolist())
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=options["r_max"], num_bessel=options["num_bessel"],
        num_polynomial_cutoff=options["num_polynomial_cutoff"], max_ell=options["max_ell"],
        interaction_cls=block, interaction_cls_first=block, num_interactions=options["num_interactions"],
        num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps(options["hidden_irreps"]),
        MLP_irreps=o3.Irreps(options["MLP_irreps"]), atomic_energies=np.array(hyper["atomic_energies"]),
        avg_num_neighbors=options["avg_num_neighbors"], atomic_numbers=ELEMENTS,
        correlation=options["correlation"], gate=torch.nn.functional.silu, radial_MLP=options["radial_MLP"],
        atomic_inter_scale=options["atomic_inter_scale"], atomic_inter_shift=options["atomic_inter_shift"],
    )
    # Every weight away from its start, so that no block's contribution is negligible.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model, hyper


def evaluate(model, atoms_list) -> list[dict]:
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable
    from mace.tools.torch_geometric import Batch

    table = AtomicNumberTable(ELEMENTS)
    results = []
    for atoms in atoms_list:
        config = mace_data.config_from_atoms(atoms)
        graph = mace_data.AtomicData.from_config(config, z_table=table, cutoff=float(model.r_max))
        batch = Batch.from_data_list([graph]).to_dict()
        periodic = bool(atoms.pbc.any())
        out = model(batch, compute_force=True, compute_stress=periodic)
        result = {"energy": out["energy"].detach(), "forces": out["forces"].detach()}
        if periodic:
            result["stress"] = out["stress"].detach()
        results.append(result)
    return results


def triples(l_max: int) -> list[tuple[int, int, int]]:
    return [(l1, l2, l3) for l1 in range(l_max + 1) for l2 in range(l_max + 1)
            for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1)]


def largest(c: torch.Tensor) -> torch.Tensor:
    """(flat index, value) of the first component of largest magnitude."""
    flat = c.flatten()
    index = int(torch.argmax(flat.abs()))
    return torch.tensor([float(index), float(flat[index])], dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "models" / "data" / "mace_reference.pt"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    import e3nn
    import mace
    from e3nn import o3

    atoms_list = structures()
    saved = {
        "mace_version": str(mace.__version__), "e3nn_version": str(e3nn.__version__),
        "torch_version": str(torch.__version__),
        "structures": [{"numbers": torch.tensor(a.numbers), "positions": torch.tensor(a.positions),
                        "cell": torch.tensor(a.cell.array), "pbc": torch.tensor(a.pbc)} for a in atoms_list],
        # e3nn 0.4.4's 3j symbols: whole for l <= 3, and for every l <= 11 (the most it has) the largest
        # component (first, row-major) with its index, from which the tests read 0.4.4's sign.
        "wigner_3j": {f"{l1},{l2},{l3}": o3.wigner_3j(l1, l2, l3) for l1, l2, l3 in triples(3)},
        "wigner_3j_largest": {f"{l1},{l2},{l3}": largest(o3.wigner_3j(l1, l2, l3)) for l1, l2, l3 in triples(11)},
        "spherical_harmonics": {"vectors": (v := torch.randn(6, 3, generator=torch.Generator().manual_seed(1))),
                                "values": o3.spherical_harmonics(list(range(5)), v, normalize=True,
                                                                 normalization="component")},
        "models": {},
    }
    for seed, name in enumerate(MODELS):
        model, hyper = build(name, seed)
        state = {key: value.detach().clone() for key, value in model.state_dict().items() if "U_matrix" not in key}
        saved["models"][name] = {"hyperparameters": hyper, "state_dict": state,
                                 "outputs": evaluate(model, atoms_list)}
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"energies {[round(float(r['energy']), 6) for r in saved['models'][name]['outputs']]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, args.out)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB; mace-torch {mace.__version__}, "
          f"e3nn {e3nn.__version__})")


if __name__ == "__main__":
    main()
