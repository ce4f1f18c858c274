"""A dense level whose positions run batch-major: a batch of one pattern.

``Dense`` numbers the children of parent position p as ``p * dim + i``: the
batch entries of one stored entry lie next to each other.  ``Batch`` numbers
them ``i * P + p``, P being the parent level's number of positions: each batch
entry (a head ``h`` of attention's scores ``S[h,i,j]``) holds one contiguous
run of values in the parent's position order, as if each were a tensor of its
own sharing the parent levels' arrays.  A kernel that walks one batch entry's
rows then reads its values contiguously (and vectorizes as over one matrix),
while every batch entry shares one copy of the index structure.
"""
from __future__ import annotations

import numpy as np

from ..ir.nodes import add, mul
from .levels import Level


class Batch(Level):
    """Every coordinate stored, positions batch-major: coordinate i below parent
    position p is at ``i * parents + p`` (``parents``: the parent level's
    position count, a scalar the kernels take)."""
    name = "batch"
    locatable = True
    full = True
    scalar_names = ("parents",)

    def locate(self, io, parent_pos, i):
        return add(mul(i, io.scalar("parents")), parent_pos)

    def scalars(self, arrays, parent_count, dim):
        return {"parents": parent_count}

    def size(self, arrays, parent_count, dim):
        return parent_count * dim

    def validate(self, arrays, parent_count, dim, what):
        return parent_count * dim

    def device_check(self, index, parent):
        return ()

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        return {}, coords.astype(np.int64) * parent_count + parent_pos, parent_count * dim

    def unpack(self, arrays, parent_pos, parent_count, dim):
        owner = np.repeat(np.arange(len(parent_pos)), dim)
        coords = np.tile(np.arange(dim, dtype=np.int64), len(parent_pos))
        return owner, coords * parent_count + parent_pos[owner].astype(np.int64), coords
