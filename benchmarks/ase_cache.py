"""Loading a large extxyz file with `ASEDataset`: first read (parse + cache) against a reload from the cache.

    python benchmarks/ase_cache.py [--frames 500000] [--file runs/bench/frames.extxyz]

Writes (once) an extxyz file of rattled small molecules (CH4, H2O, NH3, CO2,
C2H2 in turn) with energies and forces, then times, each in a fresh Python
process: ``ASEDataset(file, cache=False)`` (what every load cost before the
cache), ``ASEDataset(file)`` on the first run (parse and write the cache), and
``ASEDataset(file)`` again (read the cache). Reports wall time and frames.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MOLECULES = ["CH4", "H2O", "NH3", "CO2", "C2H2"]


def write_frames(path: Path, count: int, seed: int = 0) -> None:
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    templates = [molecule(name) for name in MOLECULES]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for k in range(count):
            atoms = templates[k % len(templates)]
            pos = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
            forces = rng.normal(size=pos.shape)
            lines = [f"{len(atoms)}",
                     f'Properties=species:S:1:pos:R:3:forces:R:3 energy={rng.normal():.8f} pbc="F F F"']
            for symbol, p, f in zip(atoms.get_chemical_symbols(), pos, forces):
                lines.append(f"{symbol} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f} {f[0]:.8f} {f[1]:.8f} {f[2]:.8f}")
            out.write("\n".join(lines) + "\n")


def child(path: str, cache: bool) -> None:
    start = time.perf_counter()
    from geognn.data import ASEDataset

    dataset = ASEDataset(path, cache=cache)
    first, last = dataset[0], dataset[len(dataset) - 1]  # touch the storage
    assert first.pos.shape[1] == 3 and last.forces.shape[1] == 3
    print(json.dumps({"seconds": time.perf_counter() - start, "frames": len(dataset)}))


def timed_load(path: Path, cache: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(path), "--cache", str(int(cache))]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500_000)
    parser.add_argument("--file", default="runs/bench/frames.extxyz")
    parser.add_argument("--skip-uncached", action="store_true", help="do not time a load without the cache")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, bool(args.cache))
    path = Path(args.file)
    if not path.exists():
        start = time.perf_counter()
        write_frames(path, args.frames)
        print(f"wrote {args.frames} frames to {path} ({path.stat().st_size / 2**20:.0f} MB) "
              f"in {time.perf_counter() - start:.0f} s")
    for stale in (path.parent / "processed").glob(f"{path.stem}_*.pt"):
        stale.unlink()
    rows = []
    if not args.skip_uncached:
        rows.append(("no cache (every load before)", timed_load(path, cache=False)))
    rows.append(("first load (parse + write cache)", timed_load(path, cache=True)))
    rows.append(("reload from the cache", timed_load(path, cache=True)))
    print("| load | frames | wall time (s) |")
    print("| --- | ---: | ---: |")
    for label, result in rows:
        print(f"| {label} | {result['frames']:,} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
