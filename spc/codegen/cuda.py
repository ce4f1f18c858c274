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

from ..errors import CompileError, UnsupportedError
from ..ir.nodes import Buffer, Kernel
from ..ir.printer import format_kernel
from ..passes.map_gpu import THREADS_PER_BLOCK, WARPS_PER_BLOCK, make_map_gpu
from ..passes.simplify import simplify
from .cuda_c import host_eval, launch_plan, render_args, render_body, render_params
from .target import Target

CODEGEN_VERSION = "cuda-1"
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
                 wide: str | bool = "auto"):
        self.kernel = kernel
        self.wide = wide
        self.name = kernel.name
        self.binary = binary
        self.source = source
        self.plan = launch_plan(kernel)
        self.kinds = [isinstance(p.value, Buffer) for p in kernel.params]
        self.size_names = [p.name for p in kernel.params if not isinstance(p.value, Buffer)]
        self._functions: dict[tuple, object] = {}
        self._grids: dict[tuple, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def function(self, device_id: int, narrow: bool):
        """The kernel (``name``, or ``name_i32`` with 32-bit index arithmetic)."""
        key = (device_id, narrow)
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                fn = self._functions.get(key)
                if fn is None:
                    fn = _load_function(self.binary, self.name + ("_i32" if narrow else ""),
                                        self.source)
                    self._functions[key] = fn
        return fn

    def grid(self, sizes: dict[str, int], device_id: int) -> tuple[int, int]:
        """(blocks to launch (0: nothing to do), spc_wide for a @gpu_lane_split loop)."""
        plan = self.plan
        if plan.mode == "single_warp":
            return 1, 0
        lo, hi = host_eval(plan.lo, sizes), host_eval(plan.hi, sizes)
        wide = 0
        if lo is None or hi is None:
            return _persistent_blocks(device_id), int(self.wide is True)
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
        return min(blocks, 2**31 - 1), wide

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

    def __call__(self, buffers, sizes, nthreads: int | None = None, stream=None) -> None:
        import numpy as np
        cupy = _cupy()
        device_id = cupy.cuda.runtime.getDevice()
        key = (tuple(sizes), device_id)
        launch = self._grids.get(key)
        if launch is None:
            launch = self.grid(dict(zip(self.size_names, sizes)), device_id)
            if len(self._grids) > 64:
                self._grids.clear()
            self._grids[key] = launch
        blocks, wide = launch
        if blocks <= 0:
            return
        # 32-bit index arithmetic when no index value can reach 2**30
        narrow = blocks * self.plan.threads < NARROW_LIMIT and all(
            abs(n) < NARROW_LIMIT for n in sizes) and all(b.size < NARROW_LIMIT for b in buffers)
        args, b, s = [], iter(buffers), iter(sizes)
        for is_buf in self.kinds:
            args.append(next(b) if is_buf else np.int64(next(s)))
        if self.plan.chunk_lo is not None:
            args.append(np.int32(wide))
        fn = self.function(device_id, narrow)
        fn((blocks,), (self.plan.threads,), tuple(args), stream=stream)


NARROW_WARPS_PER_SM = 256
NARROW_LIMIT = 2**30


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


class CUDATarget(Target):
    """NVIDIA GPUs through CUDA C and NVRTC.

    ``arch``: "sm_90" and the like; None means the current device's (which
    then needs a GPU when building).  ``deterministic``: no atomics; kernels
    whose results would need them run in a fixed order on one warp instead.
    ``wide``: for kernels with a ``@gpu_lane_split`` loop (SpMM's columns),
    whether a lane takes several columns (True), one (False), or the launcher
    decides from the sizes ("auto"); a launch choice, the binary is the same.
    """

    name = "cuda"
    device = True

    def __init__(self, arch: str | None = None, deterministic: bool = False,
                 wide: str | bool = "auto"):
        self.arch = _normalize_arch(arch)
        self.deterministic = bool(deterministic)
        if wide not in ("auto", True, False):
            raise UnsupportedError(f"wide must be 'auto', True or False, not {wide!r}")
        self.wide = wide
        self._map_gpu = make_map_gpu(self.deterministic)

    # -- Target interface ---------------------------------------------------
    def pipeline(self):
        return (simplify, self._map_gpu, simplify)

    def render(self, kernel: Kernel) -> str:
        plan = launch_plan(kernel)
        from .. import __version__
        return _template().render(
            version=__version__, name=kernel.name, launch=plan.describe(),
            ir_lines=format_kernel(kernel).rstrip("\n").split("\n"), header=header_text(),
            threads=plan.threads, params=render_params(kernel),
            body_params=render_params(kernel, "spc_idx"), body=render_body(kernel),
            args64=render_args(kernel, "long long"), args32=render_args(kernel, "int"))

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

    def load(self, binary: bytes, kernel: Kernel) -> CudaLauncher:
        return CudaLauncher(binary, kernel, wide=self.wide)

    # -- runtime hooks -----------------------------------------------------------
    def operands(self):
        """The device-side operand handling (CuPy, torch, host data moved over)."""
        from ..runtime.device import DeviceOperands
        return DeviceOperands.get()

    def __eq__(self, other):
        return (isinstance(other, CUDATarget) and self.arch == other.arch
                and self.deterministic == other.deterministic and self.wide == other.wide)

    def __hash__(self):
        return hash(("cuda", self.arch, self.deterministic, self.wide))

    def __repr__(self):
        return (f"CUDATarget(arch={self.arch!r}, deterministic={self.deterministic}, "
                f"wide={self.wide!r})")


@lru_cache(maxsize=None)
def _nvrtc_version() -> str:
    try:
        from cupy_backends.cuda.libs import nvrtc
        return ".".join(map(str, nvrtc.getVersion()))
    except Exception:  # noqa: BLE001 - only a cache-key ingredient
        return "unknown"


__all__ = ["CUDATarget", "CudaLauncher", "header_path", "header_text"]
