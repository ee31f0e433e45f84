"""Shared by the peer benchmarks: interleaved timing, peak memory in fresh processes, hardware."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(runners: dict, modes, warmup: int, rounds: int, device) -> dict:
    """{mode: {name: median seconds, "speedup": first / second}}; runners alternate order every round."""
    results = {}
    names = list(runners)
    for mode in modes:
        for runner in runners.values():
            for _ in range(warmup):
                getattr(runner, mode)()
        samples = {name: [] for name in names}
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                samples[name].append(timed(getattr(runners[name], mode), device))
        results[mode] = {name: statistics.median(times) for name, times in samples.items()}
        results[mode]["speedup"] = results[mode][names[0]] / results[mode][names[1]]
    return results


def peak_train_step_bytes(runner, device) -> int:
    """Peak memory of one ``runner.train_step()`` in this (fresh) process."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        runner.train_step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    runner.train_step()
    return (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(script: str, names, repeats: int) -> dict:
    """Median peak bytes per model, each measured by ``script --memory-child NAME`` in a fresh process."""
    peaks = {}
    for name in names:
        samples = []
        for _ in range(repeats):
            command = [sys.executable, script, "--memory-child", name, *sys.argv[1:]]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            samples.append(json.loads(output.strip().splitlines()[-1])["peak_bytes"])
        peaks[name] = statistics.median(samples)
    return peaks


def hardware(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {torch.get_num_threads()} threads"


def allocator_settings() -> dict:
    return {name: value for name, value in os.environ.items() if name.startswith("MALLOC_") or name == "LD_PRELOAD"}


def qm9_batch(args):
    """``args.batch_size`` QM9 molecules drawn with ``args.seed`` (or read from ``--molecules``), as one Batch.

    ``--save-molecules FILE`` writes the drawn molecules (atomic numbers and
    positions) so that a machine without the QM9 source (qm9pack) can run on
    the same batch with ``--molecules FILE``.
    """
    from torch_geometric.data import Batch, Data

    if args.molecules:
        stored = torch.load(args.molecules, weights_only=True)
        data = [Data(z=z, pos=pos) for z, pos in zip(stored["z"], stored["pos"])][: args.batch_size]
    else:
        from geognn.data import QM9

        qm9 = QM9(args.qm9_root, target="U0")
        generator = torch.Generator().manual_seed(args.seed)
        picked = torch.randperm(len(qm9), generator=generator)[: args.batch_size].tolist()
        data = [Data(z=qm9[i].z, pos=qm9[i].pos) for i in picked]
    if args.save_molecules:
        torch.save({"z": [d.z.clone() for d in data], "pos": [d.pos.clone() for d in data]}, args.save_molecules)
    return Batch.from_data_list(data)


def report(result: dict, args, peer: str, peer_label: str, modes) -> None:
    """Print the timing table (``modes``: (key, label) pairs) and peak memory; write ``--json`` if asked."""
    times, allocator = result["times_s"], result["allocator"]
    print(f"{result['device']}; torch {result['torch']}; {args.batch_size} QM9 molecules "
          f"({result['atoms']} atoms, {result['edges']} edges); float32; medians of {args.rounds} interleaved rounds")
    print("allocator settings: " + (" ".join(f"{k}={v}" for k, v in sorted(allocator.items())) or "defaults"))
    if "parameters" in result:
        print(f"parameters: {peer_label} {result['parameters'][peer]:,}, geognn {result['parameters']['geognn']:,}")
    print(f"{'':<24}{peer_label:>10}{'geognn':>10}{'speed-up':>10}")
    for mode, label in modes:
        row = times[mode]
        print(f"{label:<24}{row[peer] * 1e3:>8.0f}ms{row['geognn'] * 1e3:>8.0f}ms{row['speedup']:>9.2f}x")
    peak = result["peak_train_step_bytes"]
    print(f"{'peak memory, train step':<24}{peak[peer] / 2**20:>8.0f}MB{peak['geognn'] / 2**20:>8.0f}MB"
          f"{peak[peer] / peak['geognn']:>9.2f}x less")
    if "agreement" in result:
        print(f"agreement (relative, float32): energy {result['agreement']['energy']:.1e}, "
              f"forces {result['agreement']['forces']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


class PeerRunner:
    """One geognn model's measured calls on one batch; `PyGRunner` and peers override the model calls."""

    def __init__(self, name, model, batch, targets):
        self.name, self.model, self.batch = name, model, batch
        self.energy_target, self.force_target = targets

    def energy_and_forces(self):
        out = self.model(self.batch, compute_forces=True)
        return out["energy"], out["forces"]

    def energy(self):
        return self.model(self.batch)["energy"]

    def train_step(self):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        energy, forces = self.energy_and_forces()
        loss = (energy - self.energy_target).pow(2).mean() + (forces - self.force_target).pow(2).mean()
        loss.backward()

    def inference(self):
        self.model.eval()
        energy, forces = self.energy_and_forces()
        return energy.detach(), forces.detach()

    def energy_only(self):
        self.model.eval()
        with torch.no_grad():
            return self.energy()


class PyGRunner(PeerRunner):
    """A PyG model called as ``model(z, pos, batch)``; forces by autograd (with a graph when training)."""

    def energy_and_forces(self):
        pos = self.batch.pos.detach().requires_grad_(True)
        energy = self.model(self.batch.z, pos, self.batch.batch).squeeze(-1)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=self.model.training)[0]
        return energy, forces

    def energy(self):
        return self.model(self.batch.z, self.batch.pos, self.batch.batch)


def check_same_outputs(runners: dict, peer: str, tolerance: float = 1e-4) -> dict:
    """Relative energy and force differences of the two models; stops if they compute different functions."""
    (e_peer, f_peer), (e_ours, f_ours) = runners[peer].inference(), runners["geognn"].inference()
    errors = {"energy": float((e_peer - e_ours).abs().max() / e_peer.abs().max()),
              "forces": float((f_peer - f_ours).abs().max() / f_peer.abs().max())}
    if max(errors.values()) > tolerance:
        raise SystemExit(f"the two models disagree (relative errors {errors}); not timing different functions")
    return errors


def random_targets(batch, device):
    """Energy [B] and force [N, 3] targets for the loss of a train step (seeded)."""
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(batch.num_graphs, generator=generator).to(device),
            torch.randn(batch.num_nodes, 3, generator=generator).to(device))


def run_peer_benchmark(doc: str, script: str, peer: str, setup, modes, same_weights: bool = False,
                       add_arguments=None, tolerance: float = 1e-4) -> None:
    """The whole peer comparison: ``setup(args) -> (device, batch, num_edges, runners)`` with runners
    ``{peer: ..., "geognn": ...}`` having ``model`` and one method per mode; ``modes`` are (method, label).
    ``same_weights``: the two models compute one function, checked (and reported) before timing: the
    largest relative energy and force differences (float32) must stay within ``tolerance``.
    ``add_arguments(parser)``: the script's own options."""
    args = parse_arguments(doc, peer, add_arguments)
    if args.memory_child:
        device, _, _, runners = setup(args)
        print(json.dumps({"peak_bytes": peak_train_step_bytes(runners[args.memory_child], device)}))
        return
    device, batch, num_edges, runners = setup(args)
    counts = {name: sum(p.numel() for p in runner.model.parameters()) for name, runner in runners.items()}
    if counts[peer] != counts["geognn"]:
        print(f"warning: parameter counts differ: {counts}")
    agreement = check_same_outputs(runners, peer, tolerance) if same_weights else None
    times = interleaved_medians(runners, [mode for mode, _ in modes], args.warmup, args.rounds, device)
    result = {
        "times_s": times, "parameters": counts, "atoms": int(batch.num_nodes), "edges": int(num_edges),
        "peak_train_step_bytes": measure_memory(script, (peer, "geognn"), args.memory_repeats),
        "device": hardware(device), "torch": torch.__version__, "batch_size": args.batch_size,
        "rounds": args.rounds, "dtype": "float32", "allocator": allocator_settings(),
    }
    if agreement is not None:
        result["agreement"] = agreement
    report(result, args, peer, peer_label=peer if peer != "pyg" else "PyG", modes=modes)


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int = 10, warmup: int = 2,
                         memory_repeats: int = 3) -> None:
    """Batch, timing rounds, molecules and output options, shared by the peer benchmarks."""
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--memory-repeats", type=int, default=memory_repeats)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qm9-root", default="data/qm9")
    parser.add_argument("--molecules", help="read the molecules from this file (written by --save-molecules)")
    parser.add_argument("--save-molecules", help="write the drawn molecules here")
    parser.add_argument("--json", help="also write the results here")


def parse_arguments(doc: str, peer: str, add_arguments=None) -> argparse.Namespace:
    """The options every peer benchmark takes (``--memory-child`` is internal: one model's peak in a fresh process)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    add_common_arguments(parser)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--memory-child", choices=[peer, "geognn"], help=argparse.SUPPRESS)
    return parser.parse_args()
