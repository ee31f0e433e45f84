"""geognn's MACE against mace-torch's, the same weights, the same molecules, interleaved on one machine.

mace-torch pins e3nn 0.4.4 and runs in its own virtual environment, as a
worker process this script starts and drives over a pipe: it builds a
``ScaleShiftMACE`` (mace-torch's default blocks) at the size asked, writes its
weights, and then times its own calls when told to. geognn's model is
``MACE.from_mace`` of those weights, so both compute one function: energies
and forces are first compared in float64 (they must agree to 1e-10), then
both run in float32, alternating rounds:

* train step: forward, forces with ``create_graph=True``, backward of an MSE
  loss on energies and forces (mace-torch: ``model(batch, training=True)``);
* inference: energies and forces in eval mode.

The molecules are 32 QM9 molecules (``--batch-size``); mace-torch gets its
own neighbour lists, made once before timing, while geognn builds its graph
inside every call (so geognn's times include its radius graph). Peak memory of
one train step is measured in a fresh process per model. Sizes:
``small`` 128x0e + 128x1o, ``paper`` 256x0e + 256x1o + 256x2e (the MACE paper's
rMD17 model); both max_ell 3, correlation 3, 2 layers, r 5 Å.

    python -m venv .venv-mace && .venv-mace/bin/pip install torch==2.13.0 mace-torch==0.3.16
    python benchmarks/mace_vs_peers.py --sizes small --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import (add_common_arguments, allocator_settings, hardware, peak_train_step_bytes, qm9_batch,  # noqa: E402
                    random_targets)

ROOT = Path(__file__).resolve().parents[1]
SPECIES = [1, 6, 7, 8, 9]
SIZES = {
    "small": {"hidden_irreps": "128x0e + 128x1o"},
    "paper": {"hidden_irreps": "256x0e + 256x1o + 256x2e"},
}
SHARED = dict(r_max=5.0, max_ell=3, correlation=3, num_interactions=2, num_bessel=8, num_polynomial_cutoff=5,
              radial_MLP=[64, 64, 64], MLP_irreps="16x0e", avg_num_neighbors=15.0, atomic_numbers=SPECIES)


# --- the worker, in mace-torch's environment ----------------------------------------------------------------------

class MaceWorker:
    """mace-torch's model on the molecules, its calls timed here (run by ``--worker``)."""

    def __init__(self, size: str, molecules: str, exchange: str):
        import ase
        import numpy as np
        from e3nn import o3
        from mace import data as mace_data
        from mace import modules
        from mace.tools import AtomicNumberTable
        from mace.tools.torch_geometric import Batch

        torch.set_default_dtype(torch.float64)
        torch.manual_seed(0)
        hyper = {**SHARED, **SIZES[size]}
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        self.model = modules.ScaleShiftMACE(
            r_max=hyper["r_max"], num_bessel=hyper["num_bessel"], num_polynomial_cutoff=hyper["num_polynomial_cutoff"],
            max_ell=hyper["max_ell"], interaction_cls=block, interaction_cls_first=block,
            num_interactions=hyper["num_interactions"], num_elements=len(SPECIES),
            hidden_irreps=o3.Irreps(hyper["hidden_irreps"]), MLP_irreps=o3.Irreps(hyper["MLP_irreps"]),
            atomic_energies=np.zeros(len(SPECIES)), avg_num_neighbors=hyper["avg_num_neighbors"],
            atomic_numbers=SPECIES, correlation=hyper["correlation"], gate=torch.nn.functional.silu,
            radial_MLP=hyper["radial_MLP"], atomic_inter_scale=1.0, atomic_inter_shift=0.0)
        stored = torch.load(molecules, weights_only=True)
        table = AtomicNumberTable(SPECIES)
        graphs = [mace_data.AtomicData.from_config(
            mace_data.config_from_atoms(ase.Atoms(numbers=z.numpy(), positions=pos.numpy())), z_table=table,
            cutoff=hyper["r_max"]) for z, pos in zip(stored["z"], stored["pos"])]
        self.batch = Batch.from_data_list(graphs).to_dict()
        out = self.model(dict(self.batch), compute_force=True)
        state = {k: v.detach() for k, v in self.model.state_dict().items() if "U_matrix" not in k}
        torch.save({"hyperparameters": hyper, "state_dict": state, "energy": out["energy"].detach(),
                    "forces": out["forces"].detach(), "edges": int(self.batch["edge_index"].shape[1])}, exchange)
        self.model = self.model.float()
        self.batch = {k: (v.float() if v.is_floating_point() else v) for k, v in self.batch.items()}
        generator = torch.Generator().manual_seed(1)
        self.energy_target = torch.randn(len(stored["z"]), generator=generator)
        self.force_target = torch.randn(self.batch["positions"].shape[0], 3, generator=generator)

    def train_step(self):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        out = self.model(dict(self.batch), training=True, compute_force=True)
        loss = (out["energy"] - self.energy_target).pow(2).mean() + (out["forces"] - self.force_target).pow(2).mean()
        loss.backward()

    def inference(self):
        self.model.eval()
        out = self.model(dict(self.batch), training=False, compute_force=True)
        return out["energy"].detach(), out["forces"].detach()


def worker_main(args) -> None:
    worker = MaceWorker(args.size, args.molecules, args.exchange)
    if args.memory:
        print(json.dumps({"peak_bytes": peak_train_step_bytes(worker, torch.device("cpu"))}), flush=True)
        return
    print(json.dumps({"parameters": sum(p.numel() for p in worker.model.parameters())}), flush=True)
    for line in sys.stdin:
        mode = line.strip()
        if mode == "quit":
            return
        start = time.perf_counter()
        getattr(worker, mode)()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# --- the driver, in geognn's environment --------------------------------------------------------------------------

class RemoteMace:
    """The worker process, called like a runner: each call returns the seconds the worker measured."""

    def __init__(self, args, size: str, molecules: str, exchange: str, memory: bool = False):
        command = [args.mace_python, __file__, "--worker", "--size", size, "--molecules", molecules,
                   "--exchange", exchange] + (["--memory"] if memory else [])
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=env)
        self.first = self._read()

    def _read(self) -> dict:
        while True:  # mace-torch prints notices of its own (e.g. that cuequivariance is missing) on stdout
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"the mace-torch worker stopped (exit status {self.process.wait()}); run "
                                 f"{' '.join(self.process.args)} to see why")
            if line.startswith("{"):
                return json.loads(line)

    def call(self, mode: str) -> float:
        self.process.stdin.write(mode + "\n")
        self.process.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait()


class GeognnRunner:
    def __init__(self, model, batch, targets):
        self.model, self.batch = model, batch
        self.energy_target, self.force_target = targets

    def train_step(self):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        out = self.model(self.batch, compute_forces=True)
        loss = (out["energy"] - self.energy_target).pow(2).mean() + (out["forces"] - self.force_target).pow(2).mean()
        loss.backward()

    def inference(self):
        self.model.eval()
        out = self.model(self.batch, compute_forces=True)
        return out["energy"].detach(), out["forces"].detach()

    def call(self, mode: str) -> float:
        start = time.perf_counter()
        getattr(self, mode)()
        return time.perf_counter() - start


def geognn_model(exchange: str, dtype):
    from geognn.models import MACE

    saved = torch.load(exchange, weights_only=True)
    return MACE.from_mace(saved["state_dict"], saved["hyperparameters"]).to(dtype), saved


def memory_child(args) -> None:
    model, _ = geognn_model(args.exchange, torch.float32)
    batch = torch.load(args.molecules_batch, weights_only=False)
    runner = GeognnRunner(model, batch, random_targets(batch, torch.device("cpu")))
    print(json.dumps({"peak_bytes": peak_train_step_bytes(runner, torch.device("cpu"))}))


def measure_size(args, size: str, batch, folder: Path) -> dict:
    molecules, exchange = str(folder / "molecules.pt"), str(folder / f"mace_{size}.pt")
    remote = RemoteMace(args, size, molecules, exchange)
    try:
        ours64, saved = geognn_model(exchange, torch.float64)
        out = ours64(_as_dtype(batch, torch.float64), compute_forces=True)
        energy, forces = out["energy"].detach(), out["forces"].detach()
        agreement = {"energy": float((energy - saved["energy"]).abs().max() / saved["energy"].abs().max()),
                     "forces": float((forces - saved["forces"]).abs().max() / saved["forces"].abs().max())}
        if max(agreement.values()) > 1e-10:
            raise SystemExit(f"{size}: geognn and mace-torch disagree in float64 ({agreement}); not timing")
        ours = GeognnRunner(ours64.float(), batch, random_targets(batch, torch.device("cpu")))
        times = {}
        for mode in ("train_step", "inference"):
            for _ in range(args.warmup):
                remote.call(mode), ours.call(mode)
            samples = {"mace-torch": [], "geognn": []}
            for round_ in range(args.rounds):
                order = ("mace-torch", "geognn") if round_ % 2 == 0 else ("geognn", "mace-torch")
                for name in order:
                    samples[name].append(remote.call(mode) if name == "mace-torch" else ours.call(mode))
            times[mode] = {name: statistics.median(values) for name, values in samples.items()}
            times[mode]["speedup"] = times[mode]["mace-torch"] / times[mode]["geognn"]
        parameters = {"mace-torch": remote.first["parameters"],
                      "geognn": sum(p.numel() for p in ours.model.parameters())}
    finally:
        remote.close()
    torch.save(batch, folder / "batch.pt")
    peaks = {"mace-torch": [], "geognn": []}
    for _ in range(args.memory_repeats):
        peaks["mace-torch"].append(RemoteMace(args, size, molecules, str(folder / "memory.pt"), memory=True)
                                   .first["peak_bytes"])
        command = [sys.executable, __file__, "--memory-child", "--exchange", exchange, "--molecules-batch",
                   str(folder / "batch.pt")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        peaks["geognn"].append(json.loads(output.strip().splitlines()[-1])["peak_bytes"])
    return {"times_s": times, "agreement_float64": agreement, "parameters": parameters, "edges": saved["edges"],
            "peak_train_step_bytes": {name: statistics.median(values) for name, values in peaks.items()},
            "hyperparameters": saved["hyperparameters"]}


def _as_dtype(batch, dtype):
    copy = batch.clone()
    copy.pos = copy.pos.to(dtype)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=list(SIZES))
    parser.add_argument("--mace-python", default=str(ROOT / ".venv-mace" / "bin" / "python"))
    add_common_arguments(parser, rounds=5, warmup=1, memory_repeats=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--exchange", help=argparse.SUPPRESS)
    parser.add_argument("--molecules-batch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if args.memory_child:
        return memory_child(args)
    if not Path(args.mace_python).exists():
        raise SystemExit(f"no mace-torch environment at {args.mace_python}: make it as the docstring says, or "
                         "give --mace-python")
    batch = qm9_batch(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save({"z": [d.z for d in batch.to_data_list()], "pos": [d.pos for d in batch.to_data_list()]},
                   folder / "molecules.pt")
        results = {"device": hardware(torch.device("cpu")), "torch": torch.__version__, "allocator": allocator_settings(),
                   "batch_size": args.batch_size, "atoms": int(batch.num_nodes), "rounds": args.rounds, "sizes": {}}
        for size in args.sizes:
            results["sizes"][size] = measure_size(args, size, batch, folder)
    print(f"{results['device']}; torch {results['torch']}; {args.batch_size} QM9 molecules ({results['atoms']} atoms); "
          f"float32; medians of {args.rounds} interleaved rounds")
    for size, r in results["sizes"].items():
        print(f"\n{size}: {r['hyperparameters']['hidden_irreps']}, max_ell 3, correlation 3, 2 layers; "
              f"{r['edges']} edges; parameters mace-torch {r['parameters']['mace-torch']:,}, "
              f"geognn {r['parameters']['geognn']:,}; float64 agreement: energy {r['agreement_float64']['energy']:.1e}, "
              f"forces {r['agreement_float64']['forces']:.1e}")
        print(f"{'':<26}{'mace-torch':>12}{'geognn':>10}{'speed-up':>10}")
        for mode, label in (("train_step", "train step (E + F)"), ("inference", "energy + forces")):
            row = r["times_s"][mode]
            print(f"{label:<26}{row['mace-torch'] * 1e3:>10.0f}ms{row['geognn'] * 1e3:>8.0f}ms{row['speedup']:>9.2f}x")
        peak = r["peak_train_step_bytes"]
        print(f"{'peak memory, train step':<26}{peak['mace-torch'] / 2**20:>10.0f}MB{peak['geognn'] / 2**20:>8.0f}MB"
              f"{peak['mace-torch'] / peak['geognn']:>9.2f}x less")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
