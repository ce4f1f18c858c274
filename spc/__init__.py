"""spc: a sparse tensor compiler.

    import spc
    spmm = spc.compile("spmm", fmt="csr")
    C = spmm(A, B)
"""
from .api import NAMED_KERNELS, compile
from . import cache, prune
from .errors import (CacheWarning, CompileError, DTypeError, DTypeWarning, ExportError, FormatError, InputError, KernelNameError, PerformanceWarning,
                     OutputError,
                     ParseError, ResourceError, ScheduleError, ShapeError, SpcError,
                     UnsupportedError)
from .exporter import export
from .formats.format import Format, format_names, register_format
from .formats.levels import Compressed, Dense, Level, LevelIO, Parent, Singleton
from .formats.levels_padded import Diagonal, FixedWidth, NMGroup
from .formats.composite import SumTensor
from .formats.convert import to_torch_semi_structured
from .formats.tensor import Tensor, from_coords, tensor
from .runtime.compiled import CompiledKernel
from .schedule import Schedule
from .schedule_space import schedule_space
from .threads import get_num_threads, set_num_threads
from .tuning import TuneReport, tune

from ._version import find_version as _find_version

__version__ = _find_version()

from .threadpool_control import register as _register_with_threadpoolctl  # noqa: E402

_register_with_threadpoolctl()        # threadpoolctl's limits cap spc's pool, if installed

__all__ = [
    "compile", "export", "cache", "tensor", "prune", "to_torch_semi_structured", "SumTensor", "from_coords", "Tensor", "Schedule", "CompiledKernel", "Format",
    "register_format", "format_names", "Level", "Dense", "Compressed", "Singleton", "LevelIO", "Parent",
    "FixedWidth", "Diagonal", "NMGroup",
    "NAMED_KERNELS", "schedule_space", "tune", "TuneReport", "set_num_threads", "get_num_threads", "SpcError", "ParseError", "ShapeError", "FormatError", "KernelNameError",
    "InputError", "OutputError", "ExportError", "DTypeError", "DTypeWarning", "PerformanceWarning", "UnsupportedError", "ScheduleError", "CompileError", "CacheWarning", "ResourceError",
]
