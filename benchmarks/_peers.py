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


def qm9_batch(root: str, size: int, seed: int):
    from torch_geometric.data import Batch

    from geognn.data import QM9

    qm9 = QM9(root, target="U0")
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(qm9), generator=generator)[:size].tolist()
    return Batch.from_data_list([qm9[i] for i in picked])


def parse_arguments(doc: str, peer: str) -> argparse.Namespace:
    """The options every peer benchmark takes (``--memory-child`` is internal: one model's peak in a fresh process)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qm9-root", default="data/qm9")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-child", choices=[peer, "geognn"], help=argparse.SUPPRESS)
    return parser.parse_args()
