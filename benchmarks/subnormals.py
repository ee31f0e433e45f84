"""Subnormal floats: each case with and without flushing, each run in a fresh process (issue 31).

    python benchmarks/subnormals.py --rounds 2            # every case, one thread, interleaved

Cases: a SchNet energy+force training step on 32 QM9 molecules at geognn's default size, and
PyG's own SchNet at its default size against geognn's copy of it (`SchNet.from_pyg`); a force
step of a NequIP-size model (l_max 2, 32 features, 4 layers) on a perfect 500-atom fcc cell
and the same cell rattled by 0.05 Å; forces through `GeoGNNCalculator` on a perfect and a
rattled 256-atom cell; with nequip installed, the nequip package's model at the same size on the
500-atom cells (``--cases nequip-package-perfect nequip-package-rattled``). "flushed" is what geognn's command, calculator and `fit` now do
(`geognn.flush_subnormals`); "kept" sets ``GEOGNN_FLUSH_SUBNORMALS=0``, as before. Each process
runs one case a few times after a warm-up and prints the median time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ["schnet", "schnet-pyg", "schnet-pyg-copy", "nequip-perfect", "nequip-rattled", "calculator-perfect",
         "calculator-rattled"]
PEER_CASES = ["nequip-package-perfect", "nequip-package-rattled"]  # pip install "nequip==0.19.*"


def _molecules(count: int = 32):
    from torch_geometric.data import Batch

    from geognn.data import QM9

    dataset = QM9(str(ROOT / "runs" / "bench_qm9"), source=str(ROOT / "datasets" / "samples" / "qm9_xyz"),
                  target="U0", progress=False)
    return Batch.from_data_list([dataset[k % len(dataset)] for k in range(count)])


def _train_step(model, batch):
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        out = model(batch, compute_forces=True)
        loss = out["energy"].square().mean() + out["forces"].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def _pyg_step(model, batch):
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        pos = batch.pos.clone().requires_grad_(True)
        energy = model(batch.z, pos, batch.batch).reshape(-1)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
        loss = energy.square().mean() + forces.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def _crystal(atoms_per_side: int, rattled: bool):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((atoms_per_side,) * 3)
    if rattled:
        atoms.rattle(0.05, seed=0)
    return atoms


def _nequip_package(atoms):
    """The nequip package's NequIPGNNModel at the same size, as its own code builds it (a process of
    its own: its global state sets torch's default dtype to float64), on geognn's periodic edges."""
    import warnings

    import torch
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    from geognn.graph import periodic_radius_graph

    set_global_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NequIPGNNModel(seed=0, model_dtype="float32", r_max=5.0, type_names=["Cu"], num_layers=4, l_max=2,
                               num_features=32, num_bessels=8, polynomial_cutoff_p=6, radial_mlp_depth=1,
                               radial_mlp_width=128, avg_num_neighbors=15.0, per_type_energy_scales=1.0,
                               per_type_energy_shifts=0.0)
    pos = torch.tensor(atoms.positions, dtype=torch.float32)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float32)
    edge_index, shift = periodic_radius_graph(pos.double(), 5.0, cell.double(), torch.tensor([True] * 3))[:2]
    data = {"pos": pos, "edge_index": edge_index, "edge_cell_shift": shift.float(), "cell": cell[None],
            "pbc": torch.tensor([[True] * 3]), "atom_types": torch.zeros(len(atoms), dtype=torch.long),
            "batch": torch.zeros(len(atoms), dtype=torch.long), "num_atoms": torch.tensor([len(atoms)])}
    return lambda: model(dict(data))["forces"]


def build(case: str):
    """A function running one timed unit of ``case``."""
    import torch

    from geognn.data import atoms_to_data
    from geognn.models import SchNet, build_model

    torch.manual_seed(0)
    if case == "schnet":
        return _train_step(build_model("schnet"), _molecules())
    if case in ("schnet-pyg", "schnet-pyg-copy"):
        import torch_geometric.nn.models.schnet as pyg_schnet
        from torch_geometric.nn.models import SchNet as PyGSchNet

        from geognn.graph import pyg_radius_graph

        pyg_schnet.radius_graph = pyg_radius_graph  # PyG 2.8's own search needs pyg-lib, not on PyPI
        pyg = PyGSchNet()  # PyG's defaults: 128 channels, 6 interactions, 50 Gaussians, cutoff 10 Å
        return _pyg_step(pyg, _molecules()) if case == "schnet-pyg" else _train_step(SchNet.from_pyg(pyg), _molecules())
    if case.startswith("nequip-package"):
        return _nequip_package(_crystal(5, case.endswith("rattled")))
    if case.startswith("nequip"):
        model = build_model("nequip", l_max=2, num_features=32, num_layers=4, cutoff=5.0)
        data = atoms_to_data(_crystal(5, case.endswith("rattled")))
        return lambda: model(data, compute_forces=True)
    from geognn.calculator import GeoGNNCalculator

    atoms = _crystal(4, case.endswith("rattled"))
    atoms.calc = GeoGNNCalculator(build_model("nequip", l_max=2, num_features=32, num_layers=4, cutoff=5.0))

    def forces():
        atoms.calc.results.clear()
        atoms.get_forces()
    return forces


def run_one(case: str, repeats: int) -> float:
    import torch

    torch.set_num_threads(1)
    import geognn

    geognn.flush_subnormals()  # a no-op under GEOGNN_FLUSH_SUBNORMALS=0
    work = build(case)
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES + PEER_CASES,
                        help="the nequip package's cases need it installed: pip install 'nequip==0.19.*'")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(run_one(args.one, args.repeats))
        return
    results = {(case, mode): [] for case in args.cases for mode in ("kept", "flushed")}
    for _ in range(args.rounds):
        for case in args.cases:
            for mode in ("kept", "flushed"):
                env = {**os.environ, "GEOGNN_FLUSH_SUBNORMALS": "0" if mode == "kept" else "1"}
                done = subprocess.run([sys.executable, __file__, "--one", case, "--repeats", str(args.repeats)],
                                      capture_output=True, text=True, env=env, check=True)
                results[(case, mode)].append(float(done.stdout.strip().splitlines()[-1]))
    import torch

    print(f"# {torch.__version__}, 1 thread, median of {args.repeats} calls per process, median over {args.rounds} "
          "processes per cell")
    print("| case | kept (ms) | flushed (ms) | kept / flushed |")
    print("| --- | ---: | ---: | ---: |")
    for case in args.cases:
        kept, flushed = (1000 * statistics.median(results[(case, mode)]) for mode in ("kept", "flushed"))
        print(f"| {case} | {kept:.1f} | {flushed:.1f} | {kept / flushed:.2f} |")


if __name__ == "__main__":
    main()
