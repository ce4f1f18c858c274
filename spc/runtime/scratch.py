"""Scratch arrays: what the runtime allocates for kernels' SCRATCH parameters."""
from __future__ import annotations

import numpy as np

from ..ir.interp import _eval
from ..ir.nodes import Buffer, ParamRole


def scratch_arrays(kernels, sizes: dict[str, int], xp, array_dtype) -> dict[str, object]:
    """Zeroed arrays for every SCRATCH parameter of ``kernels``, by name.

    Requires: ``sizes`` holds the kernels' size parameters; ``xp`` is numpy or
    cupy; ``array_dtype(dt)`` is ``xp``'s dtype of IR type ``dt``.  Ensures: each
    array has the parameter's ``extent`` elements (at least one), zeroed.
    """
    env = {name: np.int64(v) for name, v in sizes.items()}
    out = {}
    for kernel in kernels:
        for p in kernel.params:
            if p.role is ParamRole.SCRATCH and isinstance(p.value, Buffer) and p.name not in out:
                n = max(1, int(_eval(p.extent, env, {})))
                out[p.name] = xp.zeros(n, dtype=array_dtype(p.value.dtype))
    return out
