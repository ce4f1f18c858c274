"""The reference interpreter: the living definition of the loop IR's meaning.

Slow (pure Python, one statement at a time) and meant for small inputs: tests
run a kernel here and through a backend, and before and after a pass, and
compare the numbers.
"""
from __future__ import annotations

import numpy as np

from .nodes import (Alloc, Assign, BinOp, Block, Cast, Const, DType, For, If,
                    Kernel, Let, Load, Neg, ParamRole, Select, Store, Var, WarpSum, While)

_NP = {DType.F32: np.float32, DType.F64: np.float64, DType.I8: np.int64, DType.I16: np.int64,
       DType.I32: np.int64,
       DType.I64: np.int64, DType.BOOL: np.bool_}


def _eval(e, env, bufs):
    if isinstance(e, Const):
        return _NP[e.dtype](e.value)
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Load):
        arr = bufs[e.buf.name]
        idx = int(_eval(e.index, env, bufs))
        if not 0 <= idx < len(arr):
            raise IndexError(f"{e.buf.name}[{idx}] is out of bounds (length {len(arr)})")
        v = arr[idx]
        return np.int64(v) if e.buf.dtype.is_int else v
    if isinstance(e, Neg):
        return -_eval(e.operand, env, bufs)
    if isinstance(e, Cast):
        return _NP[e.dtype](_eval(e.value, env, bufs))
    if isinstance(e, Select):
        return _eval(e.if_true if _eval(e.cond, env, bufs) else e.if_false, env, bufs)
    if isinstance(e, WarpSum):
        return _eval(e.value, env, bufs)      # one lane: the sum over lanes is its value
    if isinstance(e, BinOp):
        a = _eval(e.lhs, env, bufs)
        if e.op == "&&":
            return bool(a) and bool(_eval(e.rhs, env, bufs))
        if e.op == "||":
            return bool(a) or bool(_eval(e.rhs, env, bufs))
        b = _eval(e.rhs, env, bufs)
        op = e.op
        if op == "+": return a + b
        if op == "-": return a - b
        if op == "*": return a * b
        if op == "/": return a // b if isinstance(a, np.integer) else a / b
        if op == "min": return min(a, b)
        if op == "max": return max(a, b)
        if op == "<": return a < b
        if op == "<=": return a <= b
        if op == "==": return a == b
        if op == "!=": return a != b
    raise TypeError(f"cannot evaluate {e!r}")


def _exec(s, env, bufs):
    if isinstance(s, Block):
        for c in s.body:
            _exec(c, env, bufs)
    elif isinstance(s, (Let, Assign)):
        env[s.var.name] = _NP[s.var.dtype](_eval(s.value, env, bufs))
    elif isinstance(s, Store):
        arr = bufs[s.buf.name]
        idx = int(_eval(s.index, env, bufs))
        if not 0 <= idx < len(arr):
            raise IndexError(f"store {s.buf.name}[{idx}] is out of bounds (length {len(arr)})")
        v = _eval(s.value, env, bufs)
        arr[idx] = arr[idx] + v if s.accumulate else v
    elif isinstance(s, Alloc):
        bufs[s.buf.name] = np.zeros(s.size, dtype=_NP[s.buf.dtype])
    elif isinstance(s, For):
        lo, hi = int(_eval(s.lo, env, bufs)), int(_eval(s.hi, env, bufs))
        for v in range(lo, hi):
            env[s.var.name] = np.int64(v)
            _exec(s.body, env, bufs)
    elif isinstance(s, While):
        while _eval(s.cond, env, bufs):
            _exec(s.body, env, bufs)
    elif isinstance(s, If):
        if _eval(s.cond, env, bufs):
            _exec(s.then, env, bufs)
        elif s.otherwise is not None:
            _exec(s.otherwise, env, bufs)
    else:
        raise TypeError(f"cannot execute {s!r}")


def run_kernel(kernel: Kernel, args: dict[str, object]) -> None:
    """Execute ``kernel`` on ``args`` (name -> numpy array or int), in place.

    Requires: every parameter is in ``args``; arrays have the parameter's dtype.
    Ensures: OUTPUT arrays hold what the kernel writes; inputs are untouched.
    """
    env: dict[str, object] = {}
    bufs: dict[str, np.ndarray] = {}
    for p in kernel.params:
        if p.name not in args:
            raise KeyError(f"missing argument {p.name}")
        if p.role is ParamRole.SIZE:
            env[p.name] = np.int64(args[p.name])
        else:
            arr = args[p.name]
            bufs[p.name] = arr if p.role is ParamRole.OUTPUT else arr.copy()
    _exec(kernel.body, env, bufs)
