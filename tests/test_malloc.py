"""The glibc thresholds the geognn command and the calculator set, and the ways to opt out."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = "from geognn._malloc import keep_freed_memory; print(keep_freed_memory(), keep_freed_memory())"
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _run(code, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GEOGNN_MALLOC"}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_applied_once_unless_opted_out():
    assert _run(PROBE) == ["True", "True"]
    assert _run(PROBE, GEOGNN_MALLOC="0") == ["False", "False"]
    assert _run(PROBE, MALLOC_ARENA_MAX="2") == ["False", "False"]  # the user's own malloc settings win


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_freed_memory_stays_in_the_process():
    """After freeing a 64 MiB tensor the resident set stays up (kept for reuse) with the
    setting, and falls back without it."""
    code = ("import torch, sys\n"
            "from pathlib import Path\n"
            "from geognn._malloc import keep_freed_memory\n"
            "keep_freed_memory()\n"
            "rss = lambda: int(next(l.split()[1] for l in Path('/proc/self/status').read_text().splitlines() "
            "if l.startswith('VmRSS')))\n"
            "x = torch.ones(16 * 2**20)\n"  # 64 MiB, in chunks below the threshold: 8 of 8 MiB
            "parts = [torch.ones(2 * 2**20) for _ in range(8)]\n"
            "before = rss()\n"
            "del parts\n"
            "print(before - rss())\n")
    kept = int(_run(code)[0])
    returned = int(_run(code, GEOGNN_MALLOC="0")[0])
    assert kept < 16 * 1024 < returned  # KiB: under 16 MiB given back with the setting, more without
