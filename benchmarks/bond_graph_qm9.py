"""How well covalent-radius bonds reproduce QM9's own SMILES, for a range of tolerances.

    python benchmarks/bond_graph_qm9.py [--every K] [--limit N] [--scales 1.1 1.15 1.2 1.25 1.3]

For every QM9 molecule (qm9pack's CSVs: coordinates and the SMILES of the relaxed geometry),
builds `geognn.graph.bond_graph` (with its bond lengths) at each scale and checks it against the SMILES with
`geognn.testing.same_bond_graph` (same heavy-atom graph with the same hydrogens on each atom;
for the default scale also the same bond orders from `bond_orders`). SMILES that the small
reader refuses (none in QM9's Kekulé SMILES) are counted apart. Prints one line per scale and a
few molecules that disagree at the default scale.
"""

from __future__ import annotations

import argparse
import ast
import csv
import time

import torch
from ase.data import atomic_numbers

from geognn.data.qm9 import _QM9PACK_FILES, qm9pack_data_dir
from geognn.graph import BOND_SCALE, bond_orders, bonds_with_lengths
from geognn.testing import same_bond_graph


def qm9_molecules(limit: int | None, every: int = 1):
    csv.field_size_limit(1 << 24)
    count = 0
    for name in _QM9PACK_FILES:
        with open(qm9pack_data_dir() / name, newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle)):
                if number % every:
                    continue
                z = torch.tensor([atomic_numbers[s] for s in ast.literal_eval(row["Elements"])])
                pos = torch.tensor(ast.literal_eval(row["XYZ_Ang"]), dtype=torch.float64)
                yield int(row["Index"]), row["SMILES"], z, pos
                count += 1
                if limit is not None and count >= limit:
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N molecules only")
    parser.add_argument("--every", type=int, default=1, help="every K-th molecule of each file only")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.1, 1.15, 1.2, 1.25, 1.3])
    args = parser.parse_args()
    agree = {scale: 0 for scale in args.scales}
    orders_agree, refused, total, failures = 0, 0, 0, []
    start = time.perf_counter()
    for index, smiles, z, pos in qm9_molecules(args.limit, args.every):
        total += 1
        for scale in args.scales:
            edge_index, _, length = bonds_with_lengths(z, pos, scale=scale)
            try:
                same = same_bond_graph(smiles, z, edge_index)
            except ValueError:
                refused += scale == args.scales[0]
                break
            agree[scale] += same
            if scale == BOND_SCALE:
                if same:
                    orders_agree += same_bond_graph(smiles, z, edge_index, bond_orders(z, edge_index, length))
                elif len(failures) < 10:
                    failures.append((index, smiles))
    elapsed = time.perf_counter() - start
    print(f"{total} QM9 molecules (every {args.every}), {refused} SMILES refused by the reader, {elapsed:.0f} s")
    for scale in args.scales:
        print(f"scale {scale:.2f}: bond graph equals the SMILES for {agree[scale]} ({100 * agree[scale] / total:.2f}%)")
    if BOND_SCALE in agree:
        print(f"scale {BOND_SCALE:.2f}, bond orders from lengths equal the SMILES's too: {orders_agree} "
              f"({100 * orders_agree / total:.2f}%)")
        print("first disagreements at the default scale:", failures)


if __name__ == "__main__":
    main()
