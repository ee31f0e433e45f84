"""Where subnormal floats come from: a census of every module's outputs, per model (issue 31).

    python benchmarks/subnormal_sources.py                # every 3D model, float32 and float64

For each 3D model at its default size, on 32 QM9 molecules and on perfect fcc Cu cells (108 and
500 atoms), every tensor operation of an energy + force evaluation (forward, and the backward
pass that gives the forces) is watched through a dispatch mode, with subnormals kept
(``torch.set_flush_denormal(False)``): it counts the subnormal values (nonzero, below the
dtype's smallest normal number: 1.2e-38 in float32, 2.2e-308 in float64) in each operation's
outputs (fresh buffers and views are skipped; a copy counts its values again). The table lists,
per model (default sizes, and NequIP also at l_max 2, 32 features, 4 layers), structure and
dtype, the share of subnormal values over all operation outputs and the operations, with the
module that ran them in the forward pass ("backward" for the force pass), that made most.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"egnn": {}, "schnet": {}, "painn": {}, "dimenet++": {}, "nequip": {},
          "nequip l2": {"l_max": 2, "num_features": 32, "num_layers": 4}, "mace": {}}
# Operations that make no values of their own: fresh buffers (their garbage is not a result) and views.
SKIPPED = ("empty", "new_empty", "empty_like", "empty_strided", "new_empty_strided", "detach", "view", "_unsafe_view",
           "slice", "select", "transpose", "t", "permute", "expand", "unsqueeze", "squeeze", "as_strided", "alias",
           "reshape", "narrow", "split", "split_with_sizes", "unbind", "chunk")


def structures(dtype: torch.dtype) -> dict:
    from ase.build import bulk
    from torch_geometric.data import Batch

    from geognn.data import QM9, atoms_to_data

    qm9 = QM9(str(ROOT / "runs" / "bench_qm9"), source=str(ROOT / "datasets" / "samples" / "qm9_xyz"), target="U0",
              progress=False)
    molecules = Batch.from_data_list([qm9[k % len(qm9)] for k in range(32)])
    molecules.pos = molecules.pos.to(dtype)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    return {"32 QM9 molecules": molecules,
            "perfect fcc Cu, 108 atoms": atoms_to_data(cell.repeat((3, 3, 3)), dtype=dtype),
            "perfect fcc Cu, 500 atoms": atoms_to_data(cell.repeat((5, 5, 5)), dtype=dtype)}


class _Census(TorchDispatchMode):
    """Counts subnormal values in every operation's outputs, by (module, operation)."""

    def __init__(self, tiny: float):
        super().__init__()
        self.tiny, self.counts, self.total, self.where = tiny, Counter(), 0, ["backward"]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__.split(".")[0] in SKIPPED:
            return out
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
                self.total += tensor.numel()
                found = int(((tensor != 0) & (tensor.abs() < self.tiny)).sum())
                if found:
                    self.counts[f"{self.where[-1]}: {func.__name__}"] += found
        return out


def census(name: str, data, dtype: torch.dtype) -> tuple[float, list]:
    from geognn.models import build_model

    torch.manual_seed(0)
    model = build_model(name.split()[0], **MODELS[name]).to(dtype)
    watch = _Census(torch.finfo(dtype).tiny)
    handles = []
    for module_name, module in model.named_modules():
        if module_name and not list(module.children()):  # leaf modules name where forward ops run
            label = f"{module_name} ({type(module).__name__})"
            handles.append(module.register_forward_pre_hook(lambda *_, label=label: watch.where.append(label)))
            handles.append(module.register_forward_hook(lambda *_: watch.where.pop() and None))  # None: keep the output
    with watch:
        model(data, compute_forces=True)
    for handle in handles:
        handle.remove()
    share = sum(watch.counts.values()) / max(watch.total, 1)
    return share, watch.counts.most_common(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_flush_denormal(False)
    print("| model | structures | dtype | subnormal share of operation outputs | where most of them are made |")
    print("| --- | --- | --- | ---: | --- |")
    for dtype in (torch.float32, torch.float64):
        for label, data in structures(dtype).items():
            for name in args.models:
                share, top = census(name, data, dtype)
                shown = "; ".join(f"`{key}` {value:,}" for key, value in top) or "none"
                print(f"| {name} | {label} | {str(dtype).replace('torch.', '')} | {share:.2e} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
