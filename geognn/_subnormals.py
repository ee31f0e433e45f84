"""Flush subnormal floats to zero on CPU: what the ``geognn`` command, the calculator and `fit` set.

x86 CPUs handle subnormal floats (float32 below about 1.2e-38, float64 below 2.2e-308) in
microcode, many times slower than normal ones. geognn's models make many of them in float32:
SchNet's Gaussian radial basis underflows far from each centre, and on a perfect crystal the
vector and l = 2 features that cancel by symmetry underflow. On an Intel Xeon that made a
SchNet force-training step 2.4× and a NequIP force step on a perfect fcc cell 2.6× slower than
with subnormals flushed (issue 31); AMD's Zen cores pay much less (`benchmarks/README.md`).

`flush_subnormals` turns on the CPU's flush-to-zero and denormals-are-zero modes through
`torch.set_flush_denormal` (threads started later inherit them). Only values below those
bounds change: they become 0, which no result of geognn depends on (the float64 exactness
tests pass with it on). Once per process; ``GEOGNN_FLUSH_SUBNORMALS=0`` opts out. Code that
calls models directly gets the same with ``geognn.flush_subnormals()``.
"""

from __future__ import annotations

import os

_state = {"done": False, "applied": False}


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero on CPU, once per process (unless ``GEOGNN_FLUSH_SUBNORMALS=0``);
    returns whether flushing is on. CPUs without the modes (not x86 with SSE3) leave it off."""
    if _state["done"]:
        return _state["applied"]
    _state["done"] = True
    if os.environ.get("GEOGNN_FLUSH_SUBNORMALS", "1") == "0":
        return False
    import torch

    _state["applied"] = bool(torch.set_flush_denormal(True))
    return _state["applied"]
