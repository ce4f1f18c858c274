"""spc: a sparse tensor compiler.

    import spc
    spmm = spc.compile("spmm", fmt="csr")
    C = spmm(A, B)
"""
from .api import NAMED_KERNELS, compile
from .errors import (CompileError, DTypeError, FormatError, InputError, KernelNameError,
                     ParseError, ShapeError, SpcError, UnsupportedError)
from .formats.format import Format, format_names, register_format
from .formats.levels import Compressed, Dense, Level, Singleton
from .formats.tensor import Tensor, from_coords, tensor
from .runtime.compiled import CompiledKernel, Schedule

__version__ = "0.1.0"

__all__ = [
    "compile", "tensor", "from_coords", "Tensor", "Schedule", "CompiledKernel", "Format",
    "register_format", "format_names", "Level", "Dense", "Compressed", "Singleton",
    "NAMED_KERNELS", "SpcError", "ParseError", "ShapeError", "FormatError", "KernelNameError",
    "InputError", "DTypeError", "UnsupportedError", "CompileError",
]
