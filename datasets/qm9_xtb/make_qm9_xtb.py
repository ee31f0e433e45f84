"""Make the QM9-with-forces set: QM9 geometries, perturbed, labelled by GFN2-xTB.

    pip install "geognn[qm9,xtb]"
    python datasets/qm9_xtb/make_qm9_xtb.py data/qm9_xtb --num-molecules 1000

Interrupt it at any time and run the same command again: finished chunks are
kept. See README.md next to this file for what is generated and how long it takes.
"""

import argparse
import dataclasses
import os
import time

# One OpenMP thread per process (also for --workers 1, which labels in this process):
# tblite's threads on QM9-sized molecules cost more than they gain.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from geognn.data.xtb import XTBRecipe, qm9_molecules, run_recipe


def main(argv=None):
    defaults = XTBRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="output folder (created; reused to resume)")
    parser.add_argument("--num-molecules", type=int, default=defaults.num_molecules,
                        help="QM9 molecules drawn at random; 0 takes all 130,831")
    for field in dataclasses.fields(XTBRecipe):
        if field.name in ("num_molecules", "include_equilibrium"):
            continue
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    parser.add_argument("--no-equilibrium", action="store_true", help="do not label the unperturbed geometry")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--qm9-source", default=None, help="QM9 .xyz folder or tarball (default: qm9pack)")
    parser.add_argument("--qm9-root", default="data/qm9", help="QM9 cache folder")
    args = parser.parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(XTBRecipe)
               if f.name not in ("num_molecules", "include_equilibrium")}
    recipe = XTBRecipe(num_molecules=args.num_molecules or None, include_equilibrium=not args.no_equilibrium, **options)
    molecules = qm9_molecules(recipe.num_molecules, recipe.seed, args.qm9_source, args.qm9_root)
    start = time.perf_counter()
    path = run_recipe(molecules, args.out_dir, recipe, workers=args.workers)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
