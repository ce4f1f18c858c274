"""A user-defined sparse format for spc: SELL-C-sigma, from user code only.

SELL-C-sigma (Kreutzer et al., SIAM J. Sci. Comput. 2014) cuts the rows of a
matrix into slices of C rows; every row of a slice is padded to the slice's
longest row.  To keep that padding small, rows are first sorted by decreasing
length inside windows of sigma consecutive rows, so each slice holds rows of
similar length.  spc does not ship it; this file defines it with two levels,
registers it, and compiles SpMM for it on the CPU and for CUDA.  Nothing in
spc is edited.  docs/formats.md walks through this file step by step.

    python examples/sell_c_sigma.py [--rows 2000] [--cols 2000] [--C 8] [--sigma 64]

The storage of a SELL-C-sigma matrix with ``R`` rows (``S = ceil(R / C)``
slices, ``R' = S * C`` row slots):

* level 0 (rows), :class:`SellRows`: ``perm`` (length ``R'``), the row stored in
  each slot; ``-1`` in the ``R' - R`` padding slots at the end;
* level 1 (columns), :class:`SellSlices`: ``sptr`` (length ``S + 1``), where
  each slice starts; slice ``s`` has width ``w = (sptr[s+1] - sptr[s]) / C``
  and slot ``q`` (in slice ``q // C``) owns positions
  ``[sptr[s] + (q % C) * w, ... + w)``; ``crd`` holds the column at each
  position, ascending within a slot, ``-1`` padding at the end of the slot;
* the values, one per level-1 position (0 at padding).

Inside a slice the rows are stored one after the other (row-major), not
interleaved column by column as in the paper: spc's lowerer iterates the
positions below a parent as one contiguous range (see docs/formats.md).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time

import numpy as np
import scipy.sparse as sp

import spc
from spc.errors import FormatError, InputError
from spc.ir.nodes import BinOp, Load, add, i64, mul, sub

INT32_MAX = 2**31 - 1


def _ranks(parent_pos: np.ndarray) -> np.ndarray:
    """For grouped ``parent_pos`` (equal values adjacent): each entry's index among
    the entries of its parent."""
    n = len(parent_pos)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = parent_pos[1:] != parent_pos[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - first


def sigma_order(lengths: np.ndarray, sigma: int) -> np.ndarray:
    """The rows sorted by decreasing length inside windows of ``sigma`` rows
    (ties keep row order; windows keep their order)."""
    rows = np.arange(len(lengths), dtype=np.int64)
    return np.lexsort((rows, -np.asarray(lengths, dtype=np.int64), rows // sigma))


# ---------------------------------------------------------------------------
# Level 0: the rows, permuted and padded to a multiple of C
# ---------------------------------------------------------------------------

class SellRows(spc.Level):
    """Row slots: ``ceil(dim / C) * C`` positions below each parent position;
    slot q holds row ``perm[q]`` (``-1``: a padding slot).

    Iterable (by position) but not locatable (finding row i would need the
    inverse permutation), unique (each row once) and not ordered (slots are
    not in row order, so this level must not be merged with another sparse
    operand over the rows: spc's merge assumes ordered levels).
    """
    name = "sell_rows"
    iterable = True
    locatable = False
    unique = True
    ordered = False
    array_names = ("perm",)

    def __init__(self, C: int, sigma: int):
        self.C, self.sigma = int(C), int(sigma)

    # -- IR ------------------------------------------------------------------------
    def _slots(self, dim):
        """IR: the slots below one parent, ceil(dim / C) * C."""
        return mul(BinOp("/", add(dim, i64(self.C - 1)), i64(self.C)), i64(self.C))

    def iter_bounds(self, io, parent):
        n = self._slots(io.dim)
        return mul(parent.pos, n), add(mul(parent.pos, n), n)

    def coord(self, io, p, parent):
        return Load(io.buffer("perm"), p)

    def valid(self, io, p, coord):
        return BinOp("<=", i64(0), coord)

    # -- storage ---------------------------------------------------------------------
    def slots(self, dim: int) -> int:
        return -(-dim // self.C) * self.C

    def size(self, arrays, parent_count, dim):
        return len(arrays["perm"])

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        if parent_count != 1:
            raise FormatError("sell_rows must be the first level of its format")
        lengths = np.bincount(coords, minlength=dim) if len(coords) else np.zeros(dim, np.int64)
        perm = np.full(self.slots(dim), -1, dtype=np.int64)
        perm[:dim] = sigma_order(lengths, self.sigma)
        slot_of_row = np.empty(dim, dtype=np.int64)
        slot_of_row[perm[:dim]] = np.arange(dim)
        positions = slot_of_row[coords] if len(coords) else np.zeros(0, dtype=np.int64)
        return {"perm": perm.astype(index_dtype)}, positions, len(perm)

    def unpack(self, arrays, parent_pos, parent_count, dim):
        perm = arrays["perm"]
        n = self.slots(dim)
        child = (parent_pos.astype(np.int64)[:, None] * n + np.arange(n)).reshape(-1)
        owner = np.repeat(np.arange(len(parent_pos)), n)
        rows = perm[child].astype(np.int64)
        keep = rows >= 0
        return owner[keep], child[keep], rows[keep]

    def validate(self, arrays, parent_count, dim, what):
        perm = arrays["perm"].astype(np.int64)
        n = self.slots(dim)
        if len(perm) != parent_count * n:
            raise InputError(f"{what}: {len(perm)} row slots, expected {parent_count * n} "
                             f"(the {dim} rows rounded up to a multiple of C={self.C})")
        if len(perm) and (perm.min() < -1 or perm.max() >= dim):
            bad = int(perm.min()) if perm.min() < -1 else int(perm.max())
            raise InputError(f"{what}: row {bad} is out of range [0, {dim}) "
                             f"(-1 marks padding)")
        # every row exactly once below each parent position
        owner = np.repeat(np.arange(parent_count), n)
        seen = np.bincount((owner * dim + perm)[perm >= 0], minlength=parent_count * dim)
        if np.any(seen != 1):
            r = int(np.argmax(seen != 1))
            raise InputError(f"{what}: perm must hold every row once; row {r % dim} "
                             f"appears {int(seen[r])} times")
        return len(perm)

    # -- identity: formats with other parameters are other formats ---------------------
    def __repr__(self):
        return f"sell_rows({self.C},{self.sigma})"

    def __eq__(self, other):
        return type(self) is type(other) and (self.C, self.sigma) == (other.C, other.sigma)

    def __hash__(self):
        return hash(("sell_rows", self.C, self.sigma))


# ---------------------------------------------------------------------------
# Level 1: the columns, a padded block of C rows x w columns per slice
# ---------------------------------------------------------------------------

class SellSlices(spc.Level):
    """Columns below row slots grouped in slices of C slots.  Slice s spans
    positions ``[sptr[s], sptr[s+1])``, C rows of width
    ``w = (sptr[s+1] - sptr[s]) / C`` one after the other; the row in slot q
    owns ``[sptr[q // C] + (q % C) * w, ... + w)``.  ``crd`` holds ascending
    columns, then ``-1`` padding.
    """
    name = "sell_slices"
    iterable = True
    locatable = False
    unique = True
    ordered = True
    array_names = ("sptr", "crd")

    def __init__(self, C: int):
        self.C = int(C)

    # -- IR ------------------------------------------------------------------------
    def iter_bounds(self, io, parent):
        C = i64(self.C)
        q = parent.pos
        s = BinOp("/", q, C)                               # the slice
        sptr = io.buffer("sptr")
        start = Load(sptr, s)
        width = BinOp("/", sub(Load(sptr, add(s, i64(1))), start), C)
        lo = add(start, mul(sub(q, mul(s, C)), width))     # q % C rows before this one
        return lo, add(lo, width)

    def coord(self, io, p, parent):
        return Load(io.buffer("crd"), p)

    def valid(self, io, p, coord):
        return BinOp("<=", i64(0), coord)

    # -- storage ---------------------------------------------------------------------
    def size(self, arrays, parent_count, dim):
        return len(arrays["crd"])

    def _check_parents(self, parent_count):
        if parent_count % self.C:
            raise FormatError(f"sell_slices needs a multiple of C={self.C} parent slots, "
                              f"got {parent_count}")

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        # The parent level permutes rows, so parent_pos is not sorted here: sort
        # the entries by (slot, column) first and scatter the result back.
        self._check_parents(parent_count)
        parent_pos = parent_pos.astype(np.int64)
        coords = coords.astype(np.int64)
        order = np.lexsort((coords, parent_pos))
        q, c = parent_pos[order], coords[order]
        if len(q) > 1 and np.any((q[1:] == q[:-1]) & (c[1:] == c[:-1])):
            raise InputError("sell_slices: duplicate coordinates")
        lengths = np.bincount(q, minlength=parent_count) if len(q) else \
            np.zeros(parent_count, dtype=np.int64)
        width = lengths.reshape(-1, self.C).max(axis=1) if parent_count else \
            np.zeros(0, dtype=np.int64)
        sptr = np.zeros(len(width) + 1, dtype=np.int64)
        np.cumsum(width * self.C, out=sptr[1:])
        if sptr[-1] > INT32_MAX and np.dtype(index_dtype) == np.int32:
            raise InputError(f"sell: {int(sptr[-1])} padded positions do not fit 32-bit "
                             f"indices; convert with to_sell(A, ..., index_dtype=np.int64)")
        s = q // self.C
        pos_sorted = sptr[s] + (q - s * self.C) * width[s] + _ranks(q)
        crd = np.full(int(sptr[-1]), -1, dtype=index_dtype)
        crd[pos_sorted] = c
        positions = np.empty_like(pos_sorted)
        positions[order] = pos_sorted
        return ({"sptr": sptr.astype(index_dtype), "crd": crd}, positions, int(sptr[-1]))

    def _row_ranges(self, sptr, slots):
        s = slots // self.C
        width = (sptr[s + 1] - sptr[s]) // self.C
        return sptr[s] + (slots - s * self.C) * width, width

    def unpack(self, arrays, parent_pos, parent_count, dim):
        sptr = arrays["sptr"].astype(np.int64)
        lo, width = self._row_ranges(sptr, parent_pos.astype(np.int64))
        owner = np.repeat(np.arange(len(parent_pos)), width)
        first = np.concatenate(([0], np.cumsum(width)[:-1])) if len(width) else width
        child = np.arange(int(width.sum()), dtype=np.int64) + np.repeat(lo - first, width)
        cols = arrays["crd"][child].astype(np.int64)
        keep = cols >= 0
        return owner[keep], child[keep], cols[keep]

    def validate(self, arrays, parent_count, dim, what):
        self._check_parents(parent_count)
        sptr, crd = arrays["sptr"].astype(np.int64), arrays["crd"].astype(np.int64)
        nslices = parent_count // self.C
        if len(sptr) != nslices + 1:
            raise InputError(f"{what}: slice pointer array has length {len(sptr)}, "
                             f"expected {nslices + 1}")
        if sptr[0] != 0 or sptr[-1] != len(crd):
            raise InputError(f"{what}: slice pointers must run from 0 to {len(crd)}, "
                             f"not {sptr[0]} to {sptr[-1]}")
        step = np.diff(sptr)
        if np.any(step < 0) or np.any(step % self.C):
            s = int(np.argmax((step < 0) | (step % self.C != 0)))
            raise InputError(f"{what}: slice {s} spans {int(step[s])} positions, not a "
                             f"nonnegative multiple of C={self.C}")
        if len(crd) and (crd.min() < -1 or crd.max() >= dim):
            bad = int(crd.min()) if crd.min() < -1 else int(crd.max())
            raise InputError(f"{what}: coordinate {bad} is out of range [0, {dim}) "
                             f"(-1 marks padding)")
        # each slice is C rows of width w: find, for every position, whether the
        # next one is in the same row; there columns must ascend, padding last
        width = np.repeat(step // self.C, step)
        local = np.arange(len(crd)) - np.repeat(sptr[:-1], step)
        same_row = (local[1:] % np.maximum(width[1:], 1)) != 0
        bad = same_row & (crd[1:] >= 0) & ((crd[:-1] < 0) | (crd[1:] <= crd[:-1]))
        if np.any(bad):
            p = int(np.argmax(bad)) + 1
            s = int(np.searchsorted(sptr, p, side="right")) - 1
            q = s * self.C + int(local[p] // width[p])
            raise InputError(f"{what}: row slot {q}: columns must ascend strictly, "
                             f"padding (-1) last")
        return len(crd)

    def __repr__(self):
        return f"sell_slices({self.C})"

    def __eq__(self, other):
        return type(self) is type(other) and self.C == other.C

    def __hash__(self):
        return hash(("sell_slices", self.C))


# ---------------------------------------------------------------------------
# The format, its registration and the direct conversion from CSR
# ---------------------------------------------------------------------------

def sell(C: int = 8, sigma: int = 64) -> spc.Format:
    """The SELL-C-sigma format for matrices: rows at level 0, columns at level 1."""
    C, sigma = int(C), int(sigma)
    if C < 1 or sigma < 1:
        raise FormatError(f"sell({C},{sigma}): C and sigma must be >= 1")
    return spc.Format((SellRows(C, sigma), SellSlices(C)), (0, 1), f"sell({C},{sigma})")


def register(C: int = 8, sigma: int = 64, name: str | None = None) -> str:
    """Register ``sell(C, sigma)`` under ``name`` (default ``"sell(C,sigma)"``, the
    spelling without spaces) and return the name."""
    fmt = sell(C, sigma)
    name = name or fmt.name

    def make(rank: int) -> spc.Format:
        if rank != 2:
            raise FormatError(f"format '{name}' is for 2-d tensors, not {rank}-d")
        return fmt
    spc.register_format(name, make)
    return name


register(8, 64, "sell")          # "sell" is SELL-8-64
register(8, 64)                  # so is "sell(8,64)"


def to_sell(A, C: int = 8, sigma: int = 64, *, dtype=None, index_dtype=None) -> spc.Tensor:
    """A scipy sparse matrix in SELL-C-sigma, built straight from its CSR arrays.

    The same storage as ``spc.tensor(A, sell(C, sigma))`` (which goes through
    coordinates and the levels' ``pack``), without the detour.
    """
    A = sp.csr_matrix(A, dtype=dtype)
    A.sum_duplicates()                       # canonical: sorted, no duplicates
    R, N = A.shape
    fmt = sell(C, sigma)
    lengths = np.diff(A.indptr).astype(np.int64)
    nslots = -(-R // C) * C
    perm = np.full(nslots, -1, dtype=np.int64)
    perm[:R] = sigma_order(lengths, sigma)
    slot_len = np.where(perm >= 0, lengths[np.maximum(perm, 0)], 0)
    width = slot_len.reshape(-1, C).max(axis=1) if nslots else np.zeros(0, dtype=np.int64)
    sptr = np.zeros(len(width) + 1, dtype=np.int64)
    np.cumsum(width * C, out=sptr[1:])
    slots = np.arange(nslots)
    s = slots // C
    start = sptr[s] + (slots - s * C) * width[s]            # first position of each slot
    slot_of_row = np.empty(R, dtype=np.int64)
    slot_of_row[perm[:R]] = np.arange(R)
    row_of_entry = np.repeat(np.arange(R), lengths)
    pos = start[slot_of_row[row_of_entry]] + (np.arange(A.nnz) - A.indptr[row_of_entry])
    if index_dtype is None:
        index_dtype = np.int32 if max(int(sptr[-1]), R, N) <= INT32_MAX else np.int64
    crd = np.full(int(sptr[-1]), -1, dtype=index_dtype)
    crd[pos] = A.indices
    vals = np.zeros(int(sptr[-1]), dtype=A.dtype if A.dtype.kind == "f" else np.float64)
    vals[pos] = A.data
    arrays = [{"perm": perm.astype(index_dtype)},
              {"sptr": sptr.astype(index_dtype), "crd": crd}]
    return spc.Tensor(A.shape, fmt, arrays, vals)


def padding_overhead(t: spc.Tensor, nnz: int) -> float:
    """Stored slots per nonzero minus one (0.25: 25% of the slots are padding)."""
    return t.nnz / nnz - 1.0 if nnz else 0.0


# ---------------------------------------------------------------------------
# The tutorial run
# ---------------------------------------------------------------------------

def _ms(fn, repeats: int = 7) -> float:
    """The median time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _gpu_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return False


def main(argv=None) -> int:
    from spc.demo import example_matrix
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--cols", type=int, default=2000)
    p.add_argument("--density", type=float, default=0.005)
    p.add_argument("--n", type=int, default=32, help="columns of the dense operand")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--sigma", type=int, default=64)
    args = p.parse_args(argv)

    A = example_matrix(args.rows, args.cols, args.density)      # power-law rows, seed 0
    B = np.random.default_rng(1).standard_normal((args.cols, args.n)).astype(np.float32)
    want = A.astype(np.float64) @ B.astype(np.float64)
    print(f"matrix {A.shape[0]}x{A.shape[1]}, nnz={A.nnz}, longest row "
          f"{np.diff(A.indptr).max()}, N={args.n}")

    # 1. convert: directly from CSR, or through spc.tensor and the levels' pack
    fmt = sell(args.C, args.sigma)
    S = to_sell(A, args.C, args.sigma)
    same = spc.tensor(A, fmt)
    assert all(np.array_equal(S.arrays[k][n], same.arrays[k][n]) for k in range(2)
               for n in S.arrays[k]) and np.array_equal(S.vals, same.vals)
    assert np.array_equal(S.to_numpy(), A.toarray())
    ell = spc.tensor(A, "ell")
    print(f"{fmt.name}: {S.nnz} stored slots, padding overhead "
          f"{100 * padding_overhead(S, A.nnz):.1f}%  (ELL: "
          f"{100 * padding_overhead(ell, A.nnz):.1f}%, "
          f"sell({args.C},1), no sorting: "
          f"{100 * padding_overhead(to_sell(A, args.C, 1), A.nnz):.1f}%)")

    # 2. compile SpMM for the format on the CPU and check it against scipy
    spmm = spc.compile("spmm", fmt=fmt)
    C = spmm(S, B)
    err = np.abs(C - want).max() / max(1.0, np.abs(want).max())
    assert err < 1e-4, err
    csr = spc.compile("spmm", fmt="csr")
    print(f"cpu  spmm: max rel error {err:.1e}; {_ms(lambda: spmm(S, B)):.2f} ms a call, "
          f"{_ms(lambda: spmm(S, B, validate=False)):.2f} ms with validate=False "
          f"(csr: {_ms(lambda: csr(A, B)):.2f} ms)")
    # a registered name works too, and scipy input is converted on the way in
    C2 = spc.compile("spmm", fmt="sell")(A, B)
    assert np.abs(C2 - want).max() / max(1.0, np.abs(want).max()) < 1e-4

    # 3. CUDA: run it when CuPy and a GPU are there, else show the generated source
    if _gpu_available():
        import cupy
        gspmm = spc.compile("spmm", fmt=fmt, target="cuda")
        assert np.abs(gspmm(A, B) - want).max() / max(1.0, np.abs(want).max()) < 1e-4
        # the tensor's arrays moved to the device once; kernels use them in place
        dS = spc.Tensor(S.shape, S.format,
                        [{n: cupy.asarray(a) for n, a in lv.items()} for lv in S.arrays],
                        cupy.asarray(S.vals), validate=False)
        dB = cupy.asarray(B)
        Cg = gspmm(dS, dB)                                      # CuPy in, CuPy out
        err = float(cupy.abs(Cg - cupy.asarray(want)).max()) / max(1.0, np.abs(want).max())
        assert err < 1e-4, err

        def run():
            gspmm(dS, dB, validate=False)    # validating a user level goes through the host
            cupy.cuda.Device().synchronize()
        print(f"cuda spmm: max rel error {err:.1e}; {_ms(run):.3f} ms a call")
    else:
        gspmm = spc.compile("spmm", fmt=fmt, target="cuda", arch="sm_90")
        print("no GPU here; the CUDA kernel's loop IR (map_gpu's choices: @gpu_warp, "
              "@gpu_lane):")
        print(gspmm.ir)
        src = gspmm.source
        start = max(src.find("template <typename spc_idx>"), 0)
        print("the start of its CUDA C:")
        print("\n".join(src[start:].splitlines()[:30]))
        if shutil.which("nvcc"):
            print("(nvcc -arch=sm_90 -cubin compiles it; tests/test_user_format.py checks)")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
