"""How long QM9 takes to become tensors: geognn's QM9 against reading the same CSVs with pandas.

    python benchmarks/qm9_loading.py

The peer is qm9pack's own route (pandas.read_csv of its three files, which
leaves coordinates as strings); geognn parses coordinates and all targets,
writes its cache, then reloads from it. Both sides must see 130,831 molecules.
"""

import platform
import tempfile
import time

import torch

from geognn.data import QM9
from geognn.data.qm9 import _QM9PACK_FILES, qm9pack_data_dir


def pandas_read() -> int:
    import pandas as pd

    frames = [pd.read_csv(qm9pack_data_dir() / name) for name in _QM9PACK_FILES]
    return sum(len(frame) for frame in frames)


def main():
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    start = time.perf_counter()
    rows = pandas_read()
    pandas_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        first = QM9(root, progress=False)
        process_seconds = time.perf_counter() - start
        reloads = []
        for _ in range(3):
            start = time.perf_counter()
            again = QM9(root, progress=False)
            reloads.append(time.perf_counter() - start)
        assert len(first) == len(again) == rows == 130_831, (len(first), rows)
        start = time.perf_counter()
        for k in range(0, len(again), 13):
            again[k]
        access = (time.perf_counter() - start) / len(range(0, len(again), 13))
    reload_seconds = min(reloads)
    print(f"pandas.read_csv of qm9pack (strings, no parsing): {pandas_seconds:6.2f} s")
    print(f"geognn QM9, first load (parse + cache):           {process_seconds:6.2f} s "
          f"({process_seconds / pandas_seconds:.2f}x pandas)")
    print(f"geognn QM9, reload from cache (best of 3):        {reload_seconds:6.2f} s "
          f"({pandas_seconds / reload_seconds:.0f}x faster than pandas)")
    print(f"geognn QM9, dataset[i]:                           {access * 1e6:6.1f} us per molecule")


if __name__ == "__main__":
    main()
