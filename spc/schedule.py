"""``spc.Schedule``: every decision that shapes a kernel or its launch, as one value.

A schedule is data: frozen, hashable and printable.  ``None`` in a field means
"let spc choose"; ``k.schedule`` on a compiled kernel reports the schedule with
spc's compile-time choices filled in.  Fields come in three kinds:

* **IR knobs** pick the passes and their parameters (``spc/passes/pipeline.py``
  reads them): ``order``, ``parallel``, ``deterministic``, ``reorder_rows``,
  ``split_rows``, ``tile``, ``tile_cols``, ``tensor_cores``, ``tf32``, ``stage_tiles`` (CUDA).  The printed IR shows
  their effect and the reference interpreter runs it.
* **Launch knobs** pick among launches of one binary, from the call's sizes
  when None (``codegen/cuda.py``'s launcher): ``wide``, ``group``, ``split``,
  ``flat`` (CUDA).  A launch knob set on a kernel without the loop it steers is
  meaningless and refused.
* **Run knobs**: ``threads`` (CPU threads per call).

CPU-only knobs (``threads``, ``tile``; ``tile_cols`` but for a tensor-core tile's columns)
raise ScheduleError on CUDA, and the CUDA launch knobs and ``tensor_cores`` on
the CPU.

A value that is illegal in itself (a group of 3 lanes, 0 threads) raises
``spc.ScheduleError`` when the Schedule is made; one that is illegal or
meaningless for a kernel and target (an order that visits a sparse level
before its parent, ``wide`` on the CPU) raises it from ``spc.compile``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ScheduleError
from .ir.nodes import LANE_GROUP_SIZES

GROUPS = LANE_GROUP_SIZES           # lanes that may share one lane iteration (CUDA)
GPU_LAUNCH_KNOBS = ("wide", "group", "split", "flat")
REORDERINGS = ("none", "length", "similarity")   # values of reorder_rows
TILE_COLS = tuple(2 ** k for k in range(2, 11))  # values of tile_cols: 4 ... 1024


def check_applied(schedule: "Schedule", kernels, target: str = "cuda") -> None:
    """Raise ScheduleError for an IR knob asked for whose pass changed none of the
    scheduled ``kernels`` (``reorder_rows`` on a kernel without an independent
    loop over the rows of a csr-like operand), or whose result breaks another
    knob's promise (rows split with atomic additions under ``deterministic``,
    which on ``target`` "cpu" holds unless set to False)."""
    inspectors = {p.inspector.partition(":")[0] for k in kernels for p in k.params
                  if p.inspector}
    if schedule.reorder_rows not in (None, "none") and not any(
            name.startswith("rows_by_") for name in inspectors):
        raise ScheduleError.of(
            "reorder_rows", "needs an independent outer loop over the rows of a csr-like "
                            "operand (dense rows, then a compressed level), whose "
                            "iterations each write their own outputs")
    if schedule.tile_cols is not None and target == "cpu":
        from .passes.register_tile import register_tiles
        if not any(register_tiles(k) for k in kernels):
            raise ScheduleError.of(
                "tile_cols", "this kernel has no row update to keep in registers (a dense "
                             "output row summed over a sparse row's entries, like SpMM's)")
    if schedule.tile and target == "cpu":
        from .passes.tile import check_tiled
        check_tiled(schedule.tile, kernels)
    if schedule.tensor_cores and target == "cuda":
        from .passes.tensorize import tensorized
        if not any(tensorized(k) for k in kernels):
            raise ScheduleError.of(
                "tensor_cores", "needs a product of a blocked sparse operand (bsr, blocks "
                                "of multiples of 16 x 16), a condensed one (condensed(16,16); "
                                "condensed(16,8) with tf32) or a 2:4 one (nm(2,4), sparse "
                                "tensor cores) and a dense one, summed over the sparse "
                                "operand's columns (SpMM), with float16 or bfloat16 values "
                                "(float32: tf32=True, bsr and condensed only)")
    if schedule.stage_tiles and target == "cuda":
        from .passes.stage_tiles import staged
        if not any(staged(k) for k in kernels):
            raise ScheduleError.of(
                "stage_tiles", "needs a tensor-core tile (tensor_cores) whose operands' rows "
                               "are consecutive in memory, a multiple of 16 bytes wide")
    if schedule.tf32 and target == "cuda":
        from .passes.tensorize import uses_tf32
        if not any(uses_tf32(k) for k in kernels):
            raise ScheduleError.of(
                "tf32", "needs float32 values in a product tensor cores compute (bsr "
                        "SpMM, blocks of multiples of 16 x 8; condensed(16,8) SpMM)")
    if schedule.split_rows not in (None, False):
        if "segment_rows" not in inspectors:
            raise ScheduleError.of(
                "split_rows", "needs an independent outer loop over the rows of a csr-like "
                              "operand whose body is one loop over the row's positions, "
                              "summing into the row's outputs or writing each position's own")
        deterministic = schedule.deterministic if target == "cuda" \
            else schedule.deterministic is not False
        from .ir.traverse import walk
        from .ir.nodes import Store
        if deterministic and any(isinstance(n, Store) and n.atomic
                                 for k in kernels for n in walk(k.body)):
            raise ScheduleError.of(
                "split_rows", "segments of one row add their partial sums atomically, in "
                              "an order that may change from run to run; "
                              + ("deterministic=True forbids that" if target == "cuda" else
                                 "on target='cpu' results are deterministic unless "
                                 "deterministic=False allows it"))


@dataclass(frozen=True, slots=True)
class Schedule:
    """How to run a kernel (see the module docstring for the kinds of knob).

    ``order``: the loop order, index names outermost first (None: one that
    visits sparse levels in storage order).  ``parallel``: run the outermost
    independent loop on CPU threads or across the GPU grid (False: one thread /
    one warp).  ``threads``: CPU threads (None: SPC_NUM_THREADS or every core).
    ``deterministic``: CUDA results bit-identical from run to run: no atomics,
    kernels that would need them run their reduction in a fixed order on one
    warp (None: False; the CPU is always deterministic).
    ``wide``: CUDA, a ``@gpu_lane_split`` loop (SpMM's columns) gives each lane
    several columns (True) or one (False).  ``group``: CUDA, lanes sharing one
    iteration of a lane loop with lane groups (``groups(...)`` in the IR:
    SDDMM's nonzeros; 1 to 32, a power of two, one of the IR's sizes).
    ``split``: CUDA, warps sharing one outer iteration of such a kernel.
    ``flat``: CUDA, warps take equal chunks of the positions of a warp loop
    marked ``flat(...)`` across rows (True) or a row each (False).
    ``reorder_rows``: visit the rows of the outer loop in an order computed
    from the sparse operand once per prepared operand (``k.prepare``):
    ``"length"`` longest first; ``"similarity"`` rows sharing columns next to
    each other; ``"none"`` as stored (None: spc's choice, today ``"none"``).
    Results come back in the caller's row order.
    ``split_rows``: iterate pieces of rows, each at most this many nonzeros
    (an int), or of a size chosen from the matrix (True), instead of rows, so
    long rows are shared by several warps or threads; partial sums of one row
    are added atomically (see ``passes/split_rows.py``); False: rows whole
    (None: spc's choice, today False).  Not with ``reorder_rows``.
    ``tile_cols``: on the CPU, the widest register tile of an SpMM-like row update,
    in output columns (a power of two, 4 to 1024; narrower tiles down to one
    AVX2 vector take the rest of the row); None: half the vector registers
    (256 float32 columns with AVX-512, 64 with AVX2).  On CUDA, the output
    columns of a tensor-core tile (8 to 256; None: 64).
    ``tile``: on the CPU, strip-mine the dense loop over an index into panels of
    that many iterations, ``{"j": 128}`` (stored as sorted (index, size) pairs;
    index names as in ``order``, sizes positive ints; ``passes/tile.py``): the
    panel loop is hoisted outward as far as that is legal, so an output index's
    panels (SpMM's N tiles) go above the rows and a panel of the dense operand
    stays in cache while every row is walked; a reduction's panels stay inside
    the sum they split.  Tiling the outer rows gives row panels (threads take
    panels).  An index the kernel iterates by a sparse level's positions (SpMM's
    k over csr) cannot be tiled (ScheduleError).  None: no panels.
    ``tensor_cores``: CUDA, compute a block-sparse times dense product (BSR
    SpMM with blocks of multiples of 16 x 16, float16 or bfloat16 values) with
    the GPU's matrix instructions, a warp per tile of the output
    (``passes/tensorize.py``), and a 2:4 sparse one (nm(2,4) SpMM, float16 or
    bfloat16) on sparse tensor cores (``mma.sp``, ``passes/tensorize_nm.py``),
    and a condensed one (``condensed(16,16)`` SpMM, float16 or bfloat16;
    ``condensed(16,8)`` with ``tf32``) as tiles of gathered columns
    (``passes/tensorize_chunks.py``);
    False: scalar loops; None: spc's choice (tensor
    cores wherever they apply, unless another knob asks for rows split or
    reordered, or for one warp).  Not with ``split_rows``, ``reorder_rows`` or
    ``parallel=False``.
    ``tf32``: CUDA, float32 values: where tensor cores apply, run them on
    TensorFloat-32 inputs (10 mantissa bits, rounded to nearest; products and
    sums in float32), about float16's precision (None: False; opt-in).
    ``stage_tiles``: CUDA, a tensor-core tile reads its operands from the warp's
    shared memory, copied there by 16-byte moves (``passes/stage_tiles.py``);
    False: from global memory, element by element; None: spc's choice (staged
    wherever a whole tile's operand rows are consecutive and fit).
    """
    order: tuple[str, ...] | None = None
    parallel: bool = True
    threads: int | None = None
    deterministic: bool | None = None
    wide: bool | None = None
    group: int | None = None
    split: int | None = None
    flat: bool | None = None
    reorder_rows: str | None = None
    split_rows: int | bool | None = None
    tile: tuple[tuple[str, int], ...] | None = None
    tile_cols: int | None = None
    tensor_cores: bool | None = None
    tf32: bool | None = None
    stage_tiles: bool | None = None

    def __post_init__(self):
        if self.order is not None:
            if isinstance(self.order, str) or not all(isinstance(i, str) for i in self.order):
                raise ScheduleError.of("order", f"must be a sequence of index names, not "
                                                f"{self.order!r}")
            object.__setattr__(self, "order", tuple(self.order))
        _check_bool("parallel", self.parallel, optional=False)
        for knob in ("deterministic", "wide", "flat", "tensor_cores", "tf32", "stage_tiles"):
            _check_bool(knob, getattr(self, knob))
        if self.threads is not None and not (_is_int(self.threads) and self.threads >= 1):
            raise ScheduleError.of("threads", f"must be a positive int, not {self.threads!r}")
        if self.group is not None and not (_is_int(self.group) and self.group in GROUPS):
            raise ScheduleError.of("group", f"must be one of {GROUPS}, not {self.group!r}")
        if self.split is not None and not (_is_int(self.split) and self.split >= 1):
            raise ScheduleError.of("split", f"must be a positive int, not {self.split!r}")
        if self.reorder_rows not in (None,) + REORDERINGS:
            raise ScheduleError.of("reorder_rows", f"must be one of {REORDERINGS} or None, not "
                                                   f"{self.reorder_rows!r}")
        if not (self.split_rows is None or isinstance(self.split_rows, bool)
                or (_is_int(self.split_rows) and self.split_rows >= 1)):
            raise ScheduleError.of("split_rows", f"must be a positive int (nonzeros per piece), "
                                                 f"True, False or None, not {self.split_rows!r}")
        if self.split_rows not in (None, False) and self.reorder_rows not in (None, "none"):
            raise ScheduleError.of("split_rows", "pieces of rows are visited in stored order; "
                                                 "it does not combine with reorder_rows")
        if self.tile is not None:
            object.__setattr__(self, "tile", _tile_pairs(self.tile))
        if self.tile_cols is not None and not (
                _is_int(self.tile_cols) and self.tile_cols in TILE_COLS):
            raise ScheduleError.of("tile_cols", f"must be a power of two from 4 to 1024 "
                                                f"(output columns), not {self.tile_cols!r}")
        if self.tensor_cores:
            if self.split_rows not in (None, False) or self.reorder_rows not in (None, "none"):
                raise ScheduleError.of("tensor_cores", "a warp's tile takes whole block rows "
                                                       "in stored order; it does not combine "
                                                       "with split_rows or reorder_rows")
            if not self.parallel:
                raise ScheduleError.of("tensor_cores", "tiles are spread over the grid's "
                                                       "warps; parallel=False runs one warp")
        if self.tf32 and self.tensor_cores is False:
            raise ScheduleError.of("tf32", "tf32 is an input type of tensor cores; "
                                           "tensor_cores=False turns them off")
        if self.stage_tiles and self.tensor_cores is False:
            raise ScheduleError.of("stage_tiles", "stages the tiles tensor cores read; "
                                                  "tensor_cores=False turns them off")
        if self.flat and self.split is not None:
            raise ScheduleError.of("split", "warps per row mean nothing when flat=True "
                                            "(warps take chunks of positions, not rows)")

    def replace(self, **changes) -> "Schedule":
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def knobs(self) -> dict[str, object]:
        """The fields that differ from the default Schedule(), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def __str__(self) -> str:
        return "Schedule(" + ", ".join(f"{k}={v!r}" for k, v in self.knobs().items()) + ")"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tile_pairs(tile) -> tuple[tuple[str, int], ...] | None:
    """``tile`` (a mapping or pairs of index name -> panel size) as sorted pairs.

    Requires nothing; raises ScheduleError (knob ``tile``) unless every name is a
    str given once and every size a positive int.  Ensures: None for no pairs."""
    items = tile.items() if isinstance(tile, dict) else tile
    if isinstance(items, (str, bytes)):
        raise ScheduleError.of("tile", f"must map index names to panel sizes, e.g. "
                                       f"{{'j': 128}}, not {tile!r}")
    try:
        pairs = [tuple(item) for item in items]
    except TypeError:
        raise ScheduleError.of("tile", f"must map index names to panel sizes, e.g. "
                                       f"{{'j': 128}}, not {tile!r}") from None
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ScheduleError.of("tile", f"must map index names to panel sizes, e.g. "
                                           f"{{'j': 128}}, not {tile!r}")
        if not (_is_int(pair[1]) and pair[1] >= 1):
            raise ScheduleError.of("tile", f"the panel size of index '{pair[0]}' must be a "
                                           f"positive int, not {pair[1]!r}")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ScheduleError.of("tile", f"names an index more than once: {names}")
    return tuple(sorted(pairs)) or None


def _check_bool(knob: str, value, optional: bool = True) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ScheduleError.of(knob, f"must be True or False{' or None' if optional else ''}, "
                                     f"not {value!r}")


__all__ = ["GPU_LAUNCH_KNOBS", "GROUPS", "REORDERINGS", "Schedule", "TILE_COLS",
           "check_applied"]
