""":mod:`analyses.kernels`, imported on first use.

``kernels_on_demand.top2`` is ``kernels.top2``, but numba is imported (about 0.3 s) only
when a kernel is first looked up: a process that never runs one, such as a zero-shot run on
a small store (:mod:`analyses.small_metrics`), never pays for it.
"""

from __future__ import annotations


def __getattr__(name: str):
    from analyses import kernels

    return getattr(kernels, name)
