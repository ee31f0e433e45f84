"""Radius graphs: geognn's backends against the bare libraries and ASE, interleaved in one run.

    python benchmarks/radius_graph.py [--rounds 15] [--json FILE] [--only molecules periodic overhead steps sheared]

1. Batches of QM9 molecules (32 and 256, cutoff 5 Å) and rattled diamond-Si supercells
   (64 to 32,768 atoms, cutoff 5 Å): geognn's `radius_graph` / `periodic_radius_graph` with
   the default backend ("auto") and with torch-cluster, ASE's `neighbor_list` (one call per
   molecule: it has no batches) and the bare default library (vesin-torch: one call on the
   batch laid out apart, or on the cell). Every method's edge set (sender, receiver, shift) is
   checked equal to geognn's before timing.
2. Wrapper overhead: geognn's call over the bare backend call on the same batch of small
   molecules (torch-cluster: `torch_cluster.radius_graph`; vesin: one `NeighborList.compute`
   on positions already laid out apart, the least a batch can cost with it).
3. One energy+force step (forward and forces by autograd) of EGNN and NequIP on 32 QM9
   molecules and on a 216-atom Si cell, with the graph built by each backend.
4. Skewed cells (sheared bases of the same lattice) against their reduced cell.

Reported are medians over ``--rounds`` rounds; within a round the methods run one after the
other in an order that alternates between rounds. Methods whose library is not installed are
left out (and said so). The process keeps freed memory as the ``geognn`` command does
(`geognn._malloc`; ``--glibc-defaults`` leaves glibc's thresholds): with glibc's defaults the
heap state left by one section shifted later timings by up to 20%.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import hardware  # noqa: E402

from geognn.graph import installed_backends, periodic_radius_graph, radius_graph  # noqa: E402
from geognn.graph.neighbors import AUTO_ORDER, _lay_out_apart, widened  # noqa: E402

SI_REPEATS = (2, 4, 6, 8, 12, 16)  # 64 ... 32,768 atoms


def interleaved(methods: dict, rounds: int, device: torch.device) -> dict:
    """Median seconds per method; methods alternate their order every round."""
    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    names = list(methods)
    for fn in methods.values():
        fn()  # warm-up
    samples = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            samples[name].append(timed(methods[name]))
    return {name: statistics.median(times) for name, times in samples.items()}


def edge_set(edge_index, shift=None):
    pairs = zip(edge_index[0].tolist(), edge_index[1].tolist())
    if shift is None:
        return set(pairs)
    return {(j, i, *s) for (j, i), s in zip(pairs, shift.round().long().tolist())}


def qm9_molecules(args, size: int):
    from torch_geometric.data import Batch, Data

    from geognn.data import QM9

    qm9 = QM9(args.qm9_root, target="U0")
    picked = torch.randperm(len(qm9), generator=torch.Generator().manual_seed(args.seed))[:size].tolist()
    return Batch.from_data_list([Data(z=qm9[i].z, pos=qm9[i].pos) for i in picked])


def ase_molecules(batch):
    from ase import Atoms

    return [Atoms(numbers=batch.z[a:b].numpy(), positions=batch.pos[a:b].double().numpy())
            for a, b in zip(batch.ptr[:-1].tolist(), batch.ptr[1:].tolist())]


def bare_vesin_molecules(batch, r, device):
    """One vesin call on the batch laid out apart (laying out is done once, outside the timing)."""
    from vesin_torch import NeighborList

    pos = batch.pos.to(device, torch.float64)
    laid = _lay_out_apart(pos, widened(r), batch.batch.to(device), batch.num_graphs)
    box = torch.zeros(3, 3, dtype=torch.float64, device=device)
    periodic = torch.zeros(3, dtype=torch.bool, device=device)
    nl = NeighborList(cutoff=r, full_list=True)

    def call():
        return nl.compute(laid, box, periodic, "ij")

    i, j = call()
    return call, {(int(b), int(a)) for a, b in zip(i.tolist(), j.tolist())}


def molecule_rows(args, device, backends, results):
    print("\n### Batches of QM9 molecules (cutoff 5 Å)\n")
    cols = ["geognn auto"] + [f"geognn {b}" for b in backends] + ["bare vesin"]
    cols += ["bare torch-cluster"] * ("torch-cluster" in backends) + ["ASE (per molecule)"]
    print("| molecules | atoms | edges | " + " | ".join(f"{c} (ms)" for c in cols) + " |")
    print("| ---: | ---: | ---: |" + " ---: |" * len(cols))
    for size in (32, 256):
        batch = qm9_molecules(args, size)
        pos, b = batch.pos.to(device), batch.batch.to(device)
        reference = radius_graph(pos, args.cutoff, b)
        expected = edge_set(reference.cpu())
        methods = {"geognn auto": lambda: radius_graph(pos, args.cutoff, b)}
        for name in backends:
            methods[f"geognn {name}"] = lambda name=name: radius_graph(pos, args.cutoff, b, backend=name)
        call, found = bare_vesin_molecules(batch, args.cutoff, device)
        assert found == expected, "bare vesin differs"
        methods["bare vesin"] = call
        if "torch-cluster" in backends:
            import torch_cluster

            def cluster():
                return torch_cluster.radius_graph(pos, args.cutoff, b, loop=False, max_num_neighbors=pos.shape[0],
                                                  flow="source_to_target")
            assert edge_set(cluster().cpu()) == expected, "bare torch-cluster differs"
            methods["bare torch-cluster"] = cluster
        molecules = ase_molecules(batch)

        def ase_call():
            return [neighbor_list("ij", atoms, args.cutoff) for atoms in molecules]

        found, start = set(), 0
        for atoms, (i, j) in zip(molecules, ase_call()):
            found |= {(int(jj) + start, int(ii) + start) for ii, jj in zip(i, j)}
            start += len(atoms)
        assert found == expected, "ASE differs"
        methods["ASE (per molecule)"] = ase_call
        for name in backends:
            assert edge_set(methods[f"geognn {name}"]().cpu()) == expected, f"geognn with {name} differs"
        times = interleaved(methods, args.rounds, device)
        results["molecules"][size] = times
        print(f"| {size} | {pos.shape[0]} | {len(expected)} | " + " | ".join(f"{1e3 * times[c]:.2f}" for c in cols) + " |")


def silicon(repeat: int):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=repeat)
    return atoms


def periodic_rows(args, device, backends, results):
    print("\n### Periodic rattled diamond Si (cutoff 5 Å)\n")
    cols = ["geognn auto"] + [f"geognn {b}" for b in backends] + ["bare vesin", "ASE"]
    print("| atoms | edges | " + " | ".join(f"{c} (ms)" for c in cols) + " | ASE / auto | torch-cluster / auto |")
    print("| ---: | ---: |" + " ---: |" * (len(cols) + 2))
    from vesin_torch import NeighborList

    for repeat in args.si_repeats:
        atoms = silicon(repeat)
        pos = torch.tensor(atoms.positions, device=device)
        cell = torch.tensor(atoms.cell[:], device=device)
        pbc = torch.tensor(atoms.pbc, device=device)
        expected = edge_set(*(t.cpu() for t in periodic_radius_graph(pos, args.cutoff, cell, pbc)))
        methods = {"geognn auto": lambda: periodic_radius_graph(pos, args.cutoff, cell, pbc)}
        for name in backends:
            methods[f"geognn {name}"] = lambda name=name: periodic_radius_graph(pos, args.cutoff, cell, pbc, backend=name)
            got = edge_set(*(t.cpu() for t in methods[f"geognn {name}"]()))
            assert got == expected, f"geognn with {name} differs"
        nl = NeighborList(cutoff=args.cutoff, full_list=True)
        methods["bare vesin"] = lambda: nl.compute(pos, cell, True, "ijS")
        i, j, S = methods["bare vesin"]()
        assert {(int(b), int(a), *s) for a, b, s in zip(i.tolist(), j.tolist(), S.tolist())} == expected
        methods["ASE"] = lambda: neighbor_list("ijS", atoms, args.cutoff)
        i, j, S = methods["ASE"]()
        assert {(int(b), int(a), *map(int, s)) for a, b, s in zip(i, j, S)} == expected, "ASE differs"
        times = interleaved(methods, max(3, args.rounds // (1 + repeat // 6)), device)
        results["periodic"][len(atoms)] = times
        cluster = times.get("geognn torch-cluster")
        ratio = f"{cluster / times['geognn auto']:.2f}" if cluster else "-"
        print(f"| {len(atoms)} | {len(expected)} | " + " | ".join(f"{1e3 * times[c]:.1f}" for c in cols)
              + f" | {times['ASE'] / times['geognn auto']:.1f} | {ratio} |")


def overhead_rows(args, device, backends, results):
    print("\n### Wrapper overhead: geognn's call / the bare backend call, 32 QM9 molecules\n")
    print("| backend, bare call | bare (ms) | geognn (ms) | geognn / bare |")
    print("| --- | ---: | ---: | ---: |")
    batch = qm9_molecules(args, 32)
    pos, b = batch.pos.to(device), batch.batch.to(device)
    bare, _ = bare_vesin_molecules(batch, args.cutoff, device)
    from vesin_torch import NeighborList

    nl = NeighborList(cutoff=args.cutoff, full_list=True)
    box = torch.zeros(3, 3, dtype=pos.dtype, device=device)
    bounds = list(zip(batch.ptr[:-1].tolist(), batch.ptr[1:].tolist()))

    def per_structure():  # how vesin serves a batch without geognn: one call per molecule
        return [nl.compute(pos[a:b], box, False, "ij") for a, b in bounds]

    pairs = {"vesin, one call on the batch laid out apart": bare, "vesin, one call per molecule": per_structure}
    if "torch-cluster" in backends:
        import torch_cluster

        pairs["torch-cluster, torch_cluster.radius_graph"] = lambda: torch_cluster.radius_graph(
            pos, args.cutoff, b, loop=False, max_num_neighbors=pos.shape[0], flow="source_to_target")
    for name, bare_call in pairs.items():
        backend = name.split(",")[0]
        times = interleaved({"bare": bare_call, "geognn": lambda: radius_graph(pos, args.cutoff, b, backend=backend)},
                            args.rounds * 20, device)
        results["overhead"][name] = times
        print(f"| {name} | {1e3 * times['bare']:.3f} | {1e3 * times['geognn']:.3f} | {times['geognn'] / times['bare']:.2f} |")


def step_rows(args, device, backends, results):
    from geognn.data import atoms_to_data
    from geognn.models import build_model
    from torch_geometric.data import Batch

    print("\n### One energy+force step with the graph from each backend (float32)\n")
    print("| model | structures | " + " | ".join(f"{b} (ms)" for b in backends) + " |")
    print("| --- | --- |" + " ---: |" * len(backends))
    systems = {"32 QM9 molecules": qm9_molecules(args, 32),
               "Si, 216 atoms": Batch.from_data_list([atoms_to_data(silicon(3), dtype=torch.float32)])}
    models = {"egnn": dict(hidden_channels=128, num_layers=4, cutoff=args.cutoff),
              "nequip": dict(num_features=32, num_layers=3, l_max=2, cutoff=args.cutoff)}
    for model_name, options in models.items():
        torch.manual_seed(0)
        model = build_model(model_name, **options).to(device).eval()
        for label, data in systems.items():
            data = data.to(device)
            outputs, methods = {}, {}
            for name in backends:
                def step(name=name):
                    model.config.neighbor_backend = name
                    return model(data, compute_forces=True)
                methods[name] = step
                outputs[name] = step()
            first = outputs[backends[0]]
            for name in backends[1:]:
                assert torch.equal(outputs[name]["forces"], first["forces"]), f"{name} changes the forces"
            times = interleaved(methods, args.rounds, device)
            results["steps"][f"{model_name}, {label}"] = times
            print(f"| {model_name} | {label} | " + " | ".join(f"{1e3 * times[b]:.1f}" for b in backends) + " |")


SHEARS = {
    "[[1,0,0],[3,1,0],[-2,1,1]]": [[1, 0, 0], [3, 1, 0], [-2, 1, 1]],
    "[[1,0,0],[6,1,0],[-5,4,1]]": [[1, 0, 0], [6, 1, 0], [-5, 4, 1]],
}


def sheared_rows(args, device, backends, results):
    print("\n### Skewed cells: the same lattice in a sheared basis, default backend\n")
    print("| atoms | shear M | edges | reduced cell (ms) | sheared cell (ms) | sheared / reduced |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for repeat in (2, 3, 4):
        atoms = silicon(repeat)
        pos = torch.tensor(atoms.positions, device=device)
        cell = torch.tensor(atoms.cell[:], device=device)
        pbc = torch.tensor(atoms.pbc, device=device)
        edges = edge_set(*(t.cpu() for t in periodic_radius_graph(pos, args.cutoff, cell, pbc)))
        for label, M in SHEARS.items():
            skewed = torch.tensor(M, dtype=cell.dtype, device=device) @ cell
            edge_index, shift = periodic_radius_graph(pos, args.cutoff, skewed, pbc)
            mapped = (shift.long().cpu() @ torch.tensor(M)).tolist()
            assert {(a, b, *s) for a, b, s in zip(*edge_index.cpu().tolist(), mapped)} == edges, "edge sets differ"
            times = interleaved({"reduced": lambda: periodic_radius_graph(pos, args.cutoff, cell, pbc),
                                 "sheared": lambda: periodic_radius_graph(pos, args.cutoff, skewed, pbc)},
                                args.rounds, device)
            results["sheared"][f"{len(atoms)} {label}"] = times
            print(f"| {len(atoms)} | {label} | {len(edges)} | {1e3 * times['reduced']:.1f} | "
                  f"{1e3 * times['sheared']:.1f} | {times['sheared'] / times['reduced']:.2f} |")


SECTIONS = {"molecules": molecule_rows, "periodic": periodic_rows, "overhead": overhead_rows,
            "steps": step_rows, "sheared": sheared_rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qm9-root", default="data/qm9")
    parser.add_argument("--si-repeats", type=int, nargs="+", default=list(SI_REPEATS))
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", help="write the medians here")
    parser.add_argument("--glibc-defaults", action="store_true", help="leave glibc's malloc thresholds as they are")
    args = parser.parse_args()
    if not args.glibc_defaults:
        from geognn._malloc import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backends = installed_backends()
    import ase
    import vesin_torch

    print(f"# {hardware(device)}; {platform.machine()}; torch {torch.__version__}; vesin-torch "
          f"{vesin_torch.__version__}; ASE {ase.__version__}; backends installed: {', '.join(backends)}; "
          f"auto = {AUTO_ORDER[(device.type, 'molecules')][0]} (molecules), "
          f"{AUTO_ORDER[(device.type, 'periodic')][0]} (periodic); allocator: "
          f"{'glibc defaults' if args.glibc_defaults else 'geognn._malloc.keep_freed_memory'}")
    results = {section: {} for section in SECTIONS}
    for section in args.only:
        SECTIONS[section](args, device, backends, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
