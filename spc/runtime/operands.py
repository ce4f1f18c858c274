"""Turning user operands into validated spc Tensors (and results back).

Every check here runs before any generated code: shapes, dtypes, index ranges,
monotone pointers, sorted/unique coordinates.  Unsorted or duplicate entries in
scipy input are canonicalized (summed, as scipy does); malformed storage raises
an ``InputError`` naming the operand.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..errors import DTypeError, SpcError
from ..formats.format import Format
from ..formats.convert import is_torch as _is_torch
from ..formats.tensor import Tensor, with_value_dtype, _is_scipy_sparse, tensor, value_dtype


def family_of(x) -> str:
    """'scipy', 'numpy', 'spc', 'torch' (CPU torch tensors) or 'python'."""
    if isinstance(x, Tensor):
        return "spc"
    if _is_scipy_sparse(x):
        return "scipy"
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_torch(x):
        return "torch"
    return "python"


def on_device(x) -> bool:
    """Whether operand ``x`` lives on a GPU: a CuPy array or cupyx matrix, a CUDA
    torch tensor, or an spc Tensor whose arrays are CuPy's."""
    if isinstance(x, Tensor):
        return not isinstance(x.vals, np.ndarray)
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return True
    return mod.startswith("torch") and bool(getattr(x, "is_cuda", False))


def from_dlpack(x):
    """``x`` as a numpy array over the same memory when it is a DLPack array of no
    family spc knows (a JAX array, say), on the CPU; any other operand unchanged.
    A DLPack array numpy cannot take (on a device) is a DTypeError."""
    if type(x) is np.ndarray or not hasattr(x, "__dlpack__") or isinstance(x, Tensor) \
            or _is_torch(x) or _is_scipy_sparse(x) or type(x).__module__.startswith("cupy"):
        return x
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as err:
        raise DTypeError(f"a {type(x).__name__} given through DLPack could not be read on "
                         f"the CPU ({err}); compile with target='cuda' for device arrays, "
                         f"or move it to the host") from None


def shape_of(x) -> tuple[int, ...]:
    if isinstance(x, Tensor) or _is_scipy_sparse(x):
        return tuple(x.shape)
    return tuple(np.shape(x))


def to_tensor(x, fmt: Format, dtype: np.dtype, name: str, validate: bool) -> Tensor:
    """The operand ``name`` as a Tensor in ``fmt`` with values of ``dtype``.

    Requires: nothing of ``x``.  Ensures: the result's storage is well formed
    (when ``validate``), or an SpcError names ``name`` and the problem.
    """
    if (type(x) is np.ndarray and fmt.is_dense and x.dtype == dtype
            and x.flags.c_contiguous and fmt.identity_order and x.ndim == fmt.rank):
        # the common case, without copies: a contiguous array of the kernel's dtype
        return Tensor(x.shape, fmt, [{} for _ in range(fmt.nlevels)], x.reshape(-1), validate=False)
    with operand_errors(name):
        held = stored_entries(x)
        if _is_torch(x):
            if x.is_cuda:
                raise DTypeError(f"operand {name}: a CUDA tensor was given to a CPU kernel; "
                                 f"compile with target='cuda' or move it to the host")
            t = with_value_dtype(tensor(x, fmt, dtype=dtype), dtype)
        elif fmt.is_dense:
            t = _dense(x, fmt, dtype, name)
        elif isinstance(x, Tensor):
            if validate:
                x.validate(f"operand {name}")
            t = with_value_dtype(tensor(x, fmt), dtype)
        elif _is_scipy_sparse(x):
            t = with_value_dtype(tensor(x, fmt, validate=validate), dtype)
        else:
            t = with_value_dtype(tensor(_as_array(x, name), fmt), dtype)
        if held is not None:
            warn_if_inflated(name, fmt, held, len(t.vals))
        return t


INFLATION = 4            # a conversion storing this many times the entries held warns
INFLATION_FLOOR = 1 << 16  # ...when it stores at least this many (small ones do not matter)


def stored_entries(x) -> int | None:
    """The entries a sparse operand holds (scipy, torch sparse, spc Tensor in a
    sparse format); None for dense data."""
    if _is_scipy_sparse(x):
        return int(x.nnz)
    if isinstance(x, Tensor) and not x.format.is_dense:
        return len(x.vals)
    if _is_torch(x) and str(x.layout) != "torch.strided":       # COO, CSR, CSC, BSR...
        return int(x._nnz())
    return None


def warn_if_inflated(name: str, fmt: Format, held: int, stored: int) -> None:
    """A PerformanceWarning when converting operand ``name`` (``held`` entries) to
    ``fmt`` stores ``stored`` entries, INFLATION times as many or more."""
    if stored >= INFLATION_FLOOR and stored >= INFLATION * max(held, 1):
        import warnings
        from ..errors import PerformanceWarning
        warnings.warn(f"operand {name}: converting its {held:,} stored entries to format "
                      f"{fmt} stores {stored:,} ({stored / max(held, 1):.0f}x); a format "
                      f"closer to its pattern would be cheaper (k.prepare() converts once, "
                      f"not per call)",
                      PerformanceWarning, stacklevel=caller_level())


def caller_level() -> int:
    """The ``stacklevel`` of ``warnings.warn`` (called by this function's caller)
    that names the first frame outside spc: the user's call."""
    import os
    import sys
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 2, sys._getframe(2)          # warn_if_inflated's caller: level 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def operand_errors(name: str):
    """Re-raise an SpcError from inside the block with "operand <name>: " in front,
    unless its message names the operand already."""
    try:
        yield
    except SpcError as err:
        if f"operand {name}" in err.message:
            raise
        raise type(err)(f"operand {name}: {err.message}") from None


def _as_array(x, name: str) -> np.ndarray:
    if type(x).__module__.startswith(("cupy", "torch")) or (
            not _is_torch(x) and hasattr(x, "__cuda_array_interface__")):
        raise DTypeError(f"operand {name}: a device array was given to a CPU kernel; "
                         f"compile with target='cuda' or move it to the host")
    arr = np.asarray(x)
    if arr.dtype.kind not in "iufb" and arr.dtype.name != "bfloat16":
        raise DTypeError(f"operand {name}: dtype {arr.dtype} is not numeric")
    return arr


def _dense(x, fmt: Format, dtype: np.dtype, name: str) -> Tensor:
    if _is_scipy_sparse(x):
        from ..formats.tensor import check_scipy
        m = x if x.format in ("csr", "csc", "coo") else x.tocoo()
        check_scipy(m, f"operand {name}")
        x = m.toarray()       # the operand's format says dense: store it densely
    elif isinstance(x, Tensor):
        x = x.to_numpy()
    arr = _as_array(x, name)
    if arr.dtype.kind == "f":
        value_dtype(arr.dtype)           # refuses float types kernels do not take
    stored = arr.transpose(fmt.order) if fmt.order != tuple(range(arr.ndim)) else arr
    vals = np.ascontiguousarray(stored, dtype=dtype).reshape(-1)
    return Tensor(arr.shape, fmt, [{} for _ in fmt.levels], vals, validate=False)


def with_index_dtype(t: Tensor, index_dtype: np.dtype) -> Tensor:
    if t.format.is_dense or t.index_dtype == index_dtype:
        return t
    arrays = [{k: v if k in level.array_dtypes else v.astype(index_dtype) for k, v in lv.items()}
              for level, lv in zip(t.format.levels, t.arrays)]
    return Tensor(t.shape, t.format, arrays, t.vals, validate=False)


def scipy_arrays(inputs: list) -> bool:
    """Whether every scipy.sparse input is a sparse array (``csr_array``...), not a
    matrix: sparse results then come back as arrays, else as matrices."""
    found = [x for x in inputs if _is_scipy_sparse(x)]
    return bool(found) and all(_is_sparse_array(x) for x in found)


def _is_sparse_array(x) -> bool:
    import scipy.sparse as sp
    base = getattr(sp, "sparray", None)          # scipy >= 1.11
    return isinstance(x, base) if base is not None else type(x).__name__.endswith("_array")


def as_scipy_kind(m, arrays: bool):
    """scipy matrix ``m`` as the sparse array of its format when ``arrays`` (no copy)."""
    if not arrays:
        return m
    import scipy.sparse as sp
    return getattr(sp, f"{m.format}_array")(m, copy=False)


def result_family(inputs: list) -> str:
    fams = {family_of(x) for x in inputs}
    for fam in ("torch", "scipy", "spc", "numpy"):
        if fam in fams:
            return fam
    return "numpy"
