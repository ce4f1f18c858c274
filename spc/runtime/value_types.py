"""The value type a call computes in.

``spc.compile(..., dtype=None)`` (the default) computes each call in its
operands' value type, promoted as numpy promotes (float32 with float64 is
float64); operands that hold only integers or booleans compute in float64.
Python numbers and lists carry no type of their own: they take the others'.
bfloat16, which numpy lacks, follows torch: with float16 it gives float32, and
integers do not widen it.

An explicit ``dtype=`` computes in that type.  An operand of another type is
converted when the conversion loses nothing (numpy's ``can_cast(..., "safe")``:
float32 into a float64 kernel, int16 into a float32 one), with a DTypeWarning
once per kernel, operand and type; any other is refused with a DTypeError,
since converting it would round its values.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import DTypeError, DTypeWarning
from ..ir.nodes import DType

# the value types kernels take: 16-bit floats are stored as such and computed in float32
COMPUTED = {"float16": DType.F16, "bfloat16": DType.BF16, "float32": DType.F32,
            "float64": DType.F64}
_BFLOAT16 = "bfloat16"


def type_name(x) -> str | None:
    """The value type of operand ``x`` ('float32', 'int64', 'bfloat16', ...), or
    None for an operand without one (Python numbers and lists)."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    try:
        return _TYPE_NAMES[dt]
    except (KeyError, TypeError):          # TypeError: an unhashable dtype attribute
        pass
    name = str(dt) if isinstance(dt, np.dtype) else \
        str(dt).rpartition(".")[2]         # 'float32', '<U1'; torch.float32 -> 'float32'
    try:
        _TYPE_NAMES[dt] = name
    except TypeError:
        pass
    return name


_TYPE_NAMES: dict = {}      # an operand's dtype -> type_name's answer (str() costs ~3 us)


def _numpy(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:
        return None


def promoted(names: dict[str, str | None]) -> DType:
    """The value type a ``dtype=None`` call computes in, from each operand's
    type name (``type_name``); a DTypeError names an operand whose type no
    kernel computes in (complex, strings, objects)."""
    floats, rest, bf16 = [], [], False
    for operand, name in names.items():
        if name is None:
            continue
        if name == _BFLOAT16:
            bf16 = True
            continue
        dt = _numpy(name)
        if dt is None or dt.kind not in "biuf":
            raise DTypeError(f"operand {operand}: values of type {name} are not supported "
                             f"(spc computes in {', '.join(COMPUTED)})")
        (floats if dt.kind == "f" else rest).append(dt)
    if floats:
        result = np.result_type(*floats, *rest)
        if bf16:          # bfloat16 with float16 or wider: float32 at least (as torch)
            result = np.promote_types(result, np.float32)
    elif bf16:
        return _computed(_BFLOAT16)
    else:
        result = np.dtype(np.float64)         # integers and booleans alone
    return _computed(result.name)


def _computed(name: str) -> DType:
    dt = COMPUTED.get(name)
    if dt is None:
        raise DTypeError(f"values of type {name} are not supported yet (spc computes in "
                         f"{', '.join(COMPUTED)}); convert the operands")
    return dt


def lossless(src: str, dst: DType) -> bool:
    """Whether values of type ``src`` convert to ``dst`` exactly."""
    if src == _BFLOAT16:
        return dst.numpy in ("float32", "float64", _BFLOAT16)
    dt = _numpy(src)
    if dt is None or dt.kind not in "biuf":
        return False
    if dst.numpy == _BFLOAT16:
        return dt.kind == "b" or (dt.kind in "iu" and dt.itemsize == 1)
    return np.can_cast(dt, dst.np, "safe")


def check_operands(names: dict[str, str | None], dtype: DType, kernel: str,
                   warned: set) -> None:
    """For a kernel compiled for ``dtype``: warn (once per kernel, operand and
    type: ``warned`` remembers) about each operand whose values convert
    exactly, and raise a DTypeError for the first one that would round."""
    for operand, name in names.items():
        if name is None or name == dtype.numpy:
            continue
        if not lossless(name, dtype):
            raise DTypeError(
                f"operand {operand}: {kernel} was compiled for {dtype.numpy} "
                f"(dtype={dtype.numpy!r}) and its {name} values would be rounded; pass "
                f"{dtype.numpy} values, or compile with dtype=None (the default) to "
                f"compute in the operands' type")
        if (operand, name) not in warned:
            warned.add((operand, name))
            warnings.warn(f"{kernel}: operand {operand} holds {name} values; they are "
                          f"converted to {dtype.numpy}, the kernel's dtype, on each call",
                          DTypeWarning, stacklevel=5)
