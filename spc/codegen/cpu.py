"""The CPU target: LLVM IR from llvmlite, optimized for the host, JIT-loaded."""
from __future__ import annotations

import ctypes
import threading
import weakref
from functools import lru_cache

import llvmlite
import llvmlite.binding as llvm

from ..errors import CompileError, ScheduleError
from ..ir.nodes import Buffer, Kernel
from .cpu_pool import load_pool
from .cpu_workspaces import load_workspaces
from .llvm_ir import emit_module
from .llvm_remarks import quiet_remarks
from ..schedule import GPU_LAUNCH_KNOBS
from .objfile import elf_ok, host_machine
from .target import Target

def _source_digest(*names: str) -> str:
    """A digest of the code generator's own source, so a change to how IR becomes
    machine code can never load a binary built by the old generator."""
    import hashlib
    from pathlib import Path
    h = hashlib.sha256()
    for name in names:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


CODEGEN_VERSION = "cpu-" + _source_digest("llvm_ir.py", "cpu.py", "cpu_pool.py",
                                          "cpu_workspaces.py")
_lock = threading.Lock()


def _new_target_machine(cpu: str, features: str, opt: int):
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=opt,
                                        reloc="default", codemodel="jitdefault", jit=True)


@lru_cache(maxsize=None)
def _target_machine(cpu: str, features: str, opt: int):
    """The shared machine used to optimize and emit (never handed to an engine)."""
    return _new_target_machine(cpu, features, opt)


@lru_cache(maxsize=None)
def threading_mode() -> str:
    """"pool" (spc's own thread pool, cpu_pool.py) where it builds, else "gomp"
    when libgomp can be loaded into the process, else "pthread" (threads
    started per call)."""
    try:
        if load_pool() is not None:
            return "pool"
    except RuntimeError:      # pragma: no cover - LLVM refused the pool
        pass
    return "gomp" if load_gomp() else "pthread"


@lru_cache(maxsize=None)
def load_gomp() -> bool:
    """Load libgomp into the process (kernels of threading "gomp" link against
    it); False where it cannot be found or loaded."""
    import ctypes.util
    path = ctypes.util.find_library("gomp")
    if path:
        try:
            llvm.load_library_permanently(path)
            return True
        except RuntimeError:
            pass
    return False


def host_cpu() -> tuple[str, str]:
    llvm.initialize_native_target()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


class _PointerCache:
    """Data pointers of arrays seen recently (a weak reference and the shape
    confirm a hit): asking numpy costs ~1.5 us an array, a lookup ~0.2 us, and
    repeated calls on the same operands are the common case."""

    def __init__(self, size: int = 64):
        self.size = size
        self.entries: dict[int, tuple] = {}

    def pointer(self, arr) -> int:
        hit = self.entries.get(id(arr))
        if hit is not None and hit[0]() is arr and hit[1] == arr.shape:
            return hit[2]
        ptr = arr.ctypes.data
        if len(self.entries) >= self.size:
            self.entries.clear()
        try:
            self.entries[id(arr)] = (weakref.ref(arr), arr.shape, ptr)
        except TypeError:  # pragma: no cover - arrays always take weak references
            pass
        return ptr


_pointers = _PointerCache()


class LoadedKernel:
    """A JIT-loaded kernel: ``launcher(buffers, sizes, nthreads=n)`` through
    ctypes; ``address`` is its entry for the cheaper runtime/launch_cpu.launch."""

    _FN = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p),
                           ctypes.POINTER(ctypes.c_int64), ctypes.c_int64)

    def __init__(self, engine, name: str, kernel: Kernel):
        self._engine = engine            # keeps the code alive
        addr = engine.get_function_address(name)
        if not addr:
            raise CompileError(f"symbol {name} missing from the built object")
        self.address = addr              # for runtime/launch_cpu.launch
        self._fn = self._FN(addr)
        self.nbuf = sum(isinstance(p.value, Buffer) for p in kernel.params)
        self.nsize = len(kernel.params) - self.nbuf
        self._ptr_type = ctypes.c_void_p * max(1, self.nbuf)
        self._int_type = ctypes.c_int64 * max(1, self.nsize)

    def __call__(self, buffers, sizes, nthreads: int = 1) -> None:
        pointer = _pointers.pointer
        bufs = self._ptr_type(*[pointer(b) for b in buffers])
        ints = self._int_type(*sizes)
        self._fn(bufs, ints, nthreads)


class CPUTarget(Target):
    """LLVM for the host CPU (or the ``cpu``/``features`` given), -O3 with vectorization."""

    name = "cpu"

    def __init__(self, cpu: str | None = None, features: str | None = None, opt: int = 3,
                 threading: str | None = None):
        host_name, host_features = host_cpu()
        self.cpu = cpu or host_name
        self.features = host_features if features is None else features
        self.opt = opt
        self.threading = threading_mode() if threading is None else threading

    @property
    def accumulator_bytes(self) -> int:
        """Registers a row tile's accumulators may fill: half the vector
        register file (16 of AVX-512's 32 zmm registers, 8 of AVX2's 16 ymm)."""
        return 1024 if "+avx512f" in self.features.split(",") else 256

    def pipeline(self, schedule):
        from ..passes.pipeline import cpu_pipeline
        return cpu_pipeline(schedule, accumulator_bytes=self.accumulator_bytes)

    def check_schedule(self, schedule, kernels) -> None:
        """The CUDA launch knobs and tensor cores mean nothing here."""
        for knob in GPU_LAUNCH_KNOBS:
            if getattr(schedule, knob) is not None:
                raise ScheduleError.of(knob, "a CUDA launch knob; target='cpu' has no warps "
                                             "or lanes")
        for knob in ("tensor_cores", "tf32", "stage_tiles"):
            if getattr(schedule, knob):
                raise ScheduleError.of(knob, "a GPU's matrix instructions; target='cpu' "
                                             "has none")

    def cache_key(self) -> str:
        return (f"{CODEGEN_VERSION}|llvm{llvm.llvm_version_info}|llvmlite{llvmlite.__version__}"
                f"|{llvm.get_process_triple()}|{self.cpu}|{self.features}|O{self.opt}"
                f"|{self.threading}")

    def _tm(self):
        return _target_machine(self.cpu, self.features, self.opt)

    def render(self, kernel: Kernel) -> str:
        tm = self._tm()
        return emit_module(kernel, llvm.get_process_triple(), str(tm.target_data),
                           self.threading)

    def optimize(self, source: str):
        with _lock:
            mod = llvm.parse_assembly(source)
            mod.verify()
            pto = llvm.create_pipeline_tuning_options(speed_level=self.opt)
            pto.loop_vectorization = True
            pto.slp_vectorization = True
            pto.loop_unrolling = True
            pb = llvm.create_pass_builder(self._tm(), pto)
            with quiet_remarks():
                pb.getModulePassManager().run(mod, pb)
            return mod

    def build(self, source: str, kernel: Kernel) -> bytes:
        try:
            mod = self.optimize(source)
            with _lock:
                return bytes(self._tm().emit_object(mod))
        except RuntimeError as err:
            raise CompileError(f"LLVM failed on kernel {kernel.name}: {err}") from err

    def recognise(self, binary: bytes) -> bool:
        """A well-formed ELF object for this host (Mach-O and COFF objects, on
        hosts that make them, are recognised by their magic number only)."""
        if binary.startswith(b"\x7fELF"):
            return elf_ok(binary, host_machine())
        return binary.startswith((b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\x64\x86"))

    def load(self, binary: bytes, kernel: Kernel, schedule=None) -> LoadedKernel:
        if self.threading == "pool":
            load_pool()          # kernels link against spc_pool_parallel
            load_workspaces()    # and spc_ws_take / spc_ws_give
        elif self.threading == "gomp" and not load_gomp():
            raise CompileError("threading 'gomp' needs libgomp, which cannot be loaded")
        with _lock:
            # an execution engine takes ownership of its target machine: give it its own
            tm = _new_target_machine(self.cpu, self.features, self.opt)
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
            engine.add_object_file(llvm.ObjectFileRef.from_data(binary))
            engine.finalize_object()
        return LoadedKernel(engine, kernel.name, kernel)

    def __eq__(self, other):
        return isinstance(other, CPUTarget) and self.cache_key() == other.cache_key()

    def __hash__(self):
        return hash(self.cache_key())

    def __repr__(self):
        return f"CPUTarget(cpu={self.cpu!r})"
