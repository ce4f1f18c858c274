"""The CUDA target: CUDA C from the loop IR, built with NVRTC through CuPy.

Rendering needs neither a GPU nor CuPy: ``spc.compile(..., target="cuda",
arch="sm_90").source`` is a complete translation unit (the helper header
``runtime/spc_cuda.h`` is inlined), which ``nvcc -arch=sm_90 -cubin`` compiles.
Building (first call, or ``CompiledKernel.build()``) compiles with NVRTC for
the device's architecture (or ``arch``), and the binary is cached in memory
and on disk like the CPU target's.  Launching is the runtime's job: a
:class:`CudaLauncher` sizes the grid from the kernel's launch plan and the
call's sizes and launches on CuPy's current stream (the runtime makes that
the input framework's stream).  CuPy is imported only when needed.
"""
from __future__ import annotations

import hashlib
import re
import threading
from functools import lru_cache
from pathlib import Path

from ..errors import CompileError, ScheduleError, UnsupportedError
from ..ir.nodes import Buffer, Kernel
from ..ir.printer import format_kernel
from ..passes.map_gpu import THREADS_PER_BLOCK, WARPS_PER_BLOCK
from ..schedule import Schedule
from .cuda_c import host_eval, launch_plan, render_args, render_body, render_params
from .objfile import EM_CUDA, elf_ok
from .target import Target

CODEGEN_VERSION = "cuda-2"
NVRTC_OPTIONS = ("-std=c++17",)
HEADER_NAME = "spc_cuda.h"
_HERE = Path(__file__).resolve().parent


def header_path() -> Path:
    """The helper header: packaged copy first, else the repository's runtime/."""
    for p in (_HERE.parent / "runtime_include" / HEADER_NAME,
              _HERE.parent.parent / "runtime" / HEADER_NAME):
        if p.is_file():
            return p
    raise CompileError(f"the CUDA helper header {HEADER_NAME} is missing from the installation")


@lru_cache(maxsize=None)
def header_text() -> str:
    return header_path().read_text()


@lru_cache(maxsize=None)
def _template():
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=False)
    return env.get_template("cuda_kernel.cu.j2")


@lru_cache(maxsize=None)
def _codegen_fingerprint() -> str:
    """A hash of everything besides the IR that shapes the source."""
    h = hashlib.sha256()
    for p in (_HERE / "cuda_c.py", _HERE / "templates" / "cuda_kernel.cu.j2", header_path()):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cupy():
    try:
        import cupy
    except ImportError as err:
        raise UnsupportedError(
            f"target='cuda' needs CuPy to build and run kernels ({err}); rendering "
            f"(.source, .ir) works without it") from None
    return cupy


def _normalize_arch(arch: str | None) -> str | None:
    """'sm_90', 'compute_90', '90' or '9.0' -> '90'."""
    if arch is None:
        return None
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?", str(arch).strip())
    if not m:
        raise UnsupportedError(f"arch {arch!r} is not a CUDA architecture like 'sm_90'")
    return m.group(1) + (m.group(2) or "")


class CudaLauncher:
    """Launches one built kernel: ``launcher(buffers, sizes)`` with CuPy arrays
    (in the kernel's parameter order, buffers and sizes separately)."""

    def __init__(self, binary: bytes, kernel: Kernel, source: str | None = None,
                 schedule: Schedule | None = None):
        """``schedule``'s launch knobs (``wide``, ``group``, ``split``, ``flat``)
        fix those choices; None leaves them to the call's sizes ("auto")."""
        schedule = schedule or Schedule()
        self.kernel = kernel
        auto = lambda v: "auto" if v is None else v     # noqa: E731
        self.wide = auto(schedule.wide)
        self.group = auto(schedule.group)     # lanes per lane iteration of a lane-group kernel
        self.split = auto(schedule.split)     # warps per outer iteration of a lane-group kernel
        self.flat = auto(schedule.flat)       # flat positions for a flat-positions kernel
        self.name = kernel.name
        self.binary = binary
        self.source = source
        self.plan = launch_plan(kernel)
        self.kinds = [isinstance(p.value, Buffer) for p in kernel.params]
        self.size_names = [p.name for p in kernel.params if not isinstance(p.value, Buffer)]
        self._functions: dict[tuple, object] = {}
        self._grids: dict[tuple, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.last: tuple | None = None        # the last launch's (blocks, extra, group)

    def function(self, device_id: int, narrow: bool, group: int = 0):
        """The kernel (``name``, or ``name_i32`` with 32-bit index arithmetic;
        ``_g<group>`` for a lane-group kernel's lane groups)."""
        key = (device_id, narrow, group)
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                fn = self._functions.get(key)
                if fn is None:
                    name = self.name + ("_i32" if narrow else "") + (f"_g{group}" if group else "")
                    fn = _load_function(self.binary, name, self.source)
                    self._functions[key] = fn
        return fn

    def grid(self, sizes: dict[str, int], device_id: int, span: int | None = None,
             items: int | None = None) -> tuple[int, tuple[int, ...], int]:
        """(blocks to launch (0: nothing to do), the launch-choice arguments after
        the kernel's own (spc_wide for a @gpu_lane_split loop; spc_split, and
        spc_flat where the IR has FlatPositions, for a lane-group kernel), the
        lane-group size of a lane-group kernel (0 for others)).  ``span``: a lane-group kernel's total
        lane iterations, when known (the length of a buffer read at the lane
        loop's variable).  ``items``: the top loop's trip count when its bounds
        read memory but a buffer's length gives it (``LaunchPlan.items_buffer``)."""
        plan = self.plan
        if plan.mode == "single_warp":
            return 1, (), 0
        lo, hi = host_eval(plan.lo, sizes), host_eval(plan.hi, sizes)
        if items is not None and (lo is None or hi is None):
            lo, hi = 0, items
        if plan.group is not None:
            return self.group_grid(lo, hi, sizes, span, device_id)
        wide = 0
        if lo is None or hi is None:
            return _persistent_blocks(device_id), self._wide_arg(int(self.wide is True)), 0
        items = max(0, hi - lo)
        if plan.chunk_lo is not None:
            span = max(0, host_eval(plan.chunk_hi, sizes) - host_eval(plan.chunk_lo, sizes))
            wide = self.choose_wide(items, span, device_id)
            width = plan.wide_width if wide else 32
            items *= -(-span // width)
        if plan.mode == "warp":
            blocks = -(-items // WARPS_PER_BLOCK)
        elif plan.mode == "thread":
            blocks = -(-items // plan.threads)
        else:
            blocks = items
        return min(blocks, 2**31 - 1), self._wide_arg(wide), 0

    def _wide_arg(self, wide: int) -> tuple[int, ...]:
        return (wide,) if self.plan.chunk_lo is not None else ()

    def group_grid(self, lo, hi, sizes, span, device_id) -> tuple[int, tuple[int, ...], int]:
        """The launch of a lane-group kernel: its lane-group size from the reduction
        loop's trip count and the lane loop's mean trip count, and the warps per
        outer iteration (``spc_split``) that fill the GPU."""
        plan = self.plan
        glo, ghi = host_eval(plan.group_lo, sizes), host_eval(plan.group_hi, sizes)
        red = None if glo is None or ghi is None else max(0, ghi - glo)
        rows = None if lo is None or hi is None else max(0, hi - lo)
        llo, lhi = host_eval(plan.lane_lo, sizes), host_eval(plan.lane_hi, sizes)
        if llo is not None and lhi is not None:
            mean = max(0, lhi - llo)
        elif span is not None and rows:
            mean = span / rows
        else:
            mean = None
        group = int(self.group if self.group != "auto" else choose_group(red))
        if group not in plan.group_sizes:       # the IR's LaneGroups.sizes: the kernels built
            raise ScheduleError.of("group", f"this kernel has lane groups of "
                                            f"{list(plan.group_sizes)} lanes, not {group}")
        sms = _sm_count(device_id)
        flat = plan.flat and span is not None and self.flat is not False and (
            self.flat is True or choose_flat(mean))
        if flat:
            steps = -(-span // (32 // group))
            per_warp = max(1, min(FLAT_MAX_STEPS, -(-steps // (sms * FLAT_WARPS_PER_SM))))
            warps = -(-steps // per_warp)
            return max(1, -(-warps // WARPS_PER_BLOCK)), (1, per_warp), group
        tail = (0,) if plan.flat else ()
        if rows is None:
            split = self.split if self.split != "auto" else 1
            return _persistent_blocks(device_id), (int(split),) + tail, group
        if self.split != "auto":
            split = int(self.split)
        else:
            split = choose_split(rows, mean, group, sms)
        blocks = -(-rows * split // WARPS_PER_BLOCK)
        return min(blocks, 2**31 - 1), (split,) + tail, group

    def chosen(self) -> dict[str, object]:
        """The launch knobs the last launch took (``wide``; ``group`` and ``split``
        or ``flat``), by name; empty before any launch or for a kernel without
        the loops they steer."""
        if self.last is None:
            return {}
        _, extra, group = self.last
        plan = self.plan
        if plan.group is not None:
            if plan.flat and extra[1] > 0:
                return {"group": group, "flat": True}
            return {"group": group, "split": extra[0]} | ({"flat": False} if plan.flat else {})
        if plan.chunk_lo is not None and extra:
            return {"wide": bool(extra[0])}
        return {}

    def choose_wide(self, rows: int, span: int, device_id: int) -> int:
        """Whether each lane takes ``unroll`` columns (fewer instructions per
        multiply-add) rather than one (more warps, shorter chains): wide when
        one column per lane would give more than ``NARROW_WARPS_PER_SM`` warps
        per multiprocessor (measured on an H200: below that, the extra warps
        hide more latency than the extra instructions cost)."""
        plan = self.plan
        if plan.wide_width == 32 or self.wide is False:
            return 0
        if self.wide is True:
            return 1
        warps = rows * -(-span // 32)
        return int(warps >= _sm_count(device_id) * NARROW_WARPS_PER_SM)

    def configure(self, sizes, lengths, device_id: int) -> tuple[int, tuple[int, ...], int, bool]:
        """(blocks, launch-choice arguments, lane-group size, narrow) of a launch
        with integer parameters ``sizes`` and buffers of ``lengths`` elements:
        ``settle``'s answer, and whether the 32-bit index arithmetic variant
        applies (no index value can reach 2**30)."""
        plan = self.plan
        span = lengths[plan.lane_buffer] if plan.lane_buffer is not None else None
        items = lengths[plan.items_buffer] if plan.items_buffer is not None else None
        launch, narrow = self.settle(tuple(sizes), device_id, span, items)
        self.last = launch
        blocks, extra, group = launch
        return blocks, extra, group, narrow and max(lengths, default=0) < NARROW_LIMIT

    def settle(self, sizes: tuple, device_id: int, span, items) -> tuple[tuple, bool]:
        """(``grid``'s answer, whether the grid and ``sizes`` allow 32-bit index
        arithmetic), remembered per arguments (a few dozen shapes at most)."""
        key = (sizes, device_id, span, items)
        hit = self._grids.get(key)
        if hit is None:
            launch = self.grid(dict(zip(self.size_names, sizes)), device_id, span, items)
            narrow = launch[0] * self.plan.threads < NARROW_LIMIT \
                and all(abs(n) < NARROW_LIMIT for n in sizes)
            if len(self._grids) > 64:
                self._grids.clear()
            hit = self._grids[key] = (launch, narrow)
        return hit

    def __call__(self, buffers, sizes, nthreads: int | None = None, stream=None,
                 narrow_ok: bool = True) -> None:
        """Launch on CuPy arrays ``buffers``; ``narrow_ok`` False keeps 64-bit index
        arithmetic even where every length allows 32 (for arrays whose values,
        not only lengths, may be anything: the storage checks)."""
        import numpy as np
        cupy = _cupy()
        device_id = cupy.cuda.runtime.getDevice()
        blocks, extra, group, narrow = self.configure(sizes, [b.size for b in buffers],
                                                      device_id)
        narrow = narrow and narrow_ok
        if blocks <= 0:
            return
        args, b, s = [], iter(buffers), iter(sizes)
        for is_buf in self.kinds:
            args.append(next(b) if is_buf else np.int64(next(s)))
        args.extend(np.int32(x) for x in extra)
        fn = self.function(device_id, narrow, group)
        fn((blocks,), (self.plan.threads,), tuple(args), stream=stream)


NARROW_WARPS_PER_SM = 256
NARROW_LIMIT = 2**30
GROUP_ELEMENTS = 16      # a lane group's lanes each take at least this many reduction steps
SPLIT_WARPS_PER_SM = 64  # split outer iterations until the grid has this many warps per SM
FLAT_WARPS_PER_SM = 64   # flat positions: chunks for about this many warps per SM ...
FLAT_MAX_STEPS = 16      # ... of at most this many steps each


def choose_group(red: int | None) -> int:
    """Lanes per lane iteration of a lane-group kernel (a power of two, 1 to 32):
    enough that each lane runs about ``GROUP_ELEMENTS`` to twice that of the
    reduction loop's ``red`` iterations (fewer lanes: fewer shuffles; more:
    shorter chains, more loads in flight and whole sectors per group)."""
    if red is None:
        return 8
    group = 1
    while group < 32 and red >= GROUP_ELEMENTS * group * 2:
        group *= 2
    return group


def choose_flat(mean: float | None) -> bool:
    """Whether a flat-positions kernel enumerates positions flat rather than a warp per
    outer iteration: always, where the total is known (measured on an H200 over
    the DLMC and graph matrices: equal chunks of positions win on skewed and
    short rows by up to 5x, and a step inside one row skips the row search)."""
    return mean is not None


def choose_split(rows: int, mean: float | None, group: int, sms: int) -> int:
    """Warps per outer iteration of a lane-group kernel: enough for about
    ``SPLIT_WARPS_PER_SM`` warps per multiprocessor, while each warp keeps at
    least one step (``32 / group`` lane iterations) of its outer iteration's
    mean trip count ``mean``."""
    if rows <= 0 or mean is None:
        return 1
    want = -(-sms * SPLIT_WARPS_PER_SM // rows)
    most = -(-int(mean * group) // 32)
    return max(1, min(want, most))


@lru_cache(maxsize=None)
def _sm_count(device_id: int) -> int:
    return int(_cupy().cuda.runtime.getDeviceProperties(device_id)["multiProcessorCount"])


def _persistent_blocks(device_id: int) -> int:
    return _sm_count(device_id) * (2048 // THREADS_PER_BLOCK)


def _load_function(binary: bytes, name: str, source: str | None):
    cupy = _cupy()
    if binary.startswith(b"SRC\0"):          # built through RawModule (see CUDATarget.build)
        module = cupy.RawModule(code=binary[4:].decode(), options=NVRTC_OPTIONS)
        return module.get_function(name)
    from cupy.cuda import function
    module = function.Module()
    module.load(binary)
    return module.get_function(name)         # the Function keeps its Module alive


_GROUP_LOOP = ("no lane loop with lane groups (a reduction per output entry, like SDDMM's "
               "k, for lanes to share)")
_MISSING_LOOP = {        # launch knob -> the loop it steers, when a kernel has none
    "wide": "no @gpu_lane_split loop (a dense output loop cut into 32-column chunks, like "
            "SpMM's columns) for lanes to widen",
    "group": _GROUP_LOOP,
    "split": _GROUP_LOOP,
    "flat": "no warp loop with flat positions (lane groups over a compressed level's "
            "positions) to enumerate flat",
}


def launch_knobs(kernels) -> frozenset[str]:
    """The launch knobs (``wide``, ``group``, ``split``, ``flat``) that steer some
    loop of the mapped ``kernels`` (map_gpu's output)."""
    plans = [launch_plan(k) for k in kernels]
    knobs = set()
    if any(p.chunk_lo is not None for p in plans):
        knobs.add("wide")
    if any(p.group is not None for p in plans):
        knobs |= {"group", "split"}
    if any(p.flat for p in plans):
        knobs.add("flat")
    return frozenset(knobs)


class CUDATarget(Target):
    """NVIDIA GPUs through CUDA C and NVRTC.

    ``arch``: "sm_90" and the like; None means the current device's (which
    then needs a GPU when building).  How kernels map onto the GPU is the
    Schedule's business (``deterministic``, ``wide``, ``group``, ``split``,
    ``flat``: see ``spc.Schedule``), not the target's.
    """

    name = "cuda"
    device = True

    def __init__(self, arch: str | None = None):
        self.arch = _normalize_arch(arch)

    # -- Target interface ---------------------------------------------------
    def render(self, kernel: Kernel) -> str:
        plan = launch_plan(kernel)
        from .. import __version__
        args64, args32 = render_args(kernel, "long long"), render_args(kernel, "int")
        wide = "64-bit index arithmetic, as the loop IR defines it."
        narrow = ("32-bit index arithmetic: launched only when every length, size and "
                  "thread index of the call is below 2**30.")
        if plan.group is None:
            template_params = "typename spc_idx"
            instances = [dict(suffix="", targs="long long", args=args64, comment=wide),
                         dict(suffix="_i32", targs="int", args=args32, comment=narrow)]
        else:
            template_params = "typename spc_idx, int spc_group"
            instances = [dict(suffix=f"{sfx}_g{g}", targs=f"{t}, {g}", args=a,
                              comment=f"{c} Lane groups of {g}.")
                         for sfx, t, a, c in (("", "long long", args64, wide),
                                              ("_i32", "int", args32, narrow))
                         for g in plan.group_sizes]
        return _template().render(
            version=__version__, name=kernel.name, launch=plan.describe(),
            ir_lines=format_kernel(kernel).rstrip("\n").split("\n"), header=header_text(),
            threads=plan.threads, params=render_params(kernel),
            template_params=template_params,
            body_params=render_params(kernel, "spc_idx"), body=render_body(kernel),
            instances=instances)

    def check_schedule(self, schedule, kernels) -> None:
        """``threads`` means nothing on a GPU; a launch knob needs the loop it steers
        in one of ``kernels`` (map_gpu's output)."""
        if schedule.threads is not None:
            raise ScheduleError.of("threads", "CPU threads; on target='cuda' the grid is "
                                              "sized from each call")
        if schedule.tile is not None:
            raise ScheduleError.of("tile", "panels of an index are a CPU schedule; on "
                                           "target='cuda' blocks, warps and lanes take the "
                                           "loops (map_gpu) and no pass tiles them yet")
        if schedule.tile_cols is not None:
            from ..passes.tensorize import tensorized
            if not 8 <= schedule.tile_cols <= 256:
                raise ScheduleError.of("tile_cols", f"a tensor-core tile has 8 to 256 "
                                                    f"columns, not {schedule.tile_cols}")
            widths = {tensorized(k) for k in kernels} - {None}
            if not widths:
                raise ScheduleError.of("tile_cols", "on target='cuda', the columns of a "
                                                    "tensor-core tile, which this kernel "
                                                    "has none of (else lanes take the "
                                                    "columns: see wide)")
            if schedule.tile_cols not in widths:
                raise ScheduleError.of("tile_cols", f"this kernel's tensor-core tiles are "
                                                    f"its blocks (a sampled product: "
                                                    f"SDDMM), {sorted(widths)} columns wide")
        present = launch_knobs(kernels)
        for knob, missing in _MISSING_LOOP.items():
            if getattr(schedule, knob) is not None and knob not in present:
                where = "" if schedule.parallel else " (parallel=False runs one warp)"
                raise ScheduleError.of(knob, f"this kernel has {missing}{where}")

    def resolved_arch(self) -> str:
        if self.arch is not None:
            return self.arch
        cupy = _cupy()
        return str(cupy.cuda.Device().compute_capability)

    def cache_key(self) -> str:
        return (f"{CODEGEN_VERSION}|{_codegen_fingerprint()}|sm_{self.resolved_arch()}|"
                f"nvrtc{_nvrtc_version()}|{' '.join(NVRTC_OPTIONS)}")

    def build(self, source: str, kernel: Kernel) -> bytes:
        cupy = _cupy()
        arch = self.resolved_arch()
        try:
            from cupy.cuda import compiler
            binary, _ = compiler.compile_using_nvrtc(source, options=NVRTC_OPTIONS, arch=arch,
                                                     filename=f"{kernel.name}.cu")
            return bytes(binary)
        except (ImportError, AttributeError, TypeError, ValueError):
            # the internal entry point moved: let RawModule compile at load time
            cupy.RawModule(code=source, options=NVRTC_OPTIONS).get_function(kernel.name)
            return b"SRC\0" + source.encode()
        except Exception as err:  # NVRTC's CompileException carries the log
            raise CompileError(f"NVRTC failed on kernel {kernel.name}: {err}") from err

    def recognise(self, binary: bytes) -> bool:
        """A well-formed cubin (an ELF object for EM_CUDA) or source for
        RawModule (see ``build``)."""
        return binary.startswith(b"SRC\0") or elf_ok(binary, EM_CUDA)

    def load(self, binary: bytes, kernel: Kernel, schedule: Schedule | None = None
             ) -> CudaLauncher:
        return CudaLauncher(binary, kernel, schedule=schedule)

    # -- runtime hooks -----------------------------------------------------------
    def fast_path(self, ck):
        """The steady-state call paths of CompiledKernel ``ck``: on torch CUDA
        tensors (runtime/torch_fast.py) and on CuPy arrays and cupyx matrices
        (runtime/cupy_fast.py), each made at its family's first call."""
        from ..runtime.device_fast import DeviceFastPaths
        return DeviceFastPaths(ck)

    def operands(self):
        """The device-side operand handling (CuPy, torch, host data moved over)."""
        from ..runtime.device import DeviceOperands
        return DeviceOperands.get()

    def __eq__(self, other):
        return isinstance(other, CUDATarget) and self.arch == other.arch

    def __hash__(self):
        return hash(("cuda", self.arch))

    def __repr__(self):
        return f"CUDATarget(arch={self.arch!r})"


@lru_cache(maxsize=None)
def _nvrtc_version() -> str:
    try:
        from cupy_backends.cuda.libs import nvrtc
        return ".".join(map(str, nvrtc.getVersion()))
    except Exception:  # noqa: BLE001 - only a cache-key ingredient
        return "unknown"


__all__ = ["CUDATarget", "CudaLauncher", "header_path", "header_text", "launch_knobs"]
