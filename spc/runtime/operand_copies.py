"""Calling a kernel that reads operands through copies (``ir/operand_copies.py``).

``CopyingKernel`` wraps the kernel compiled for the rewritten expression: a
call builds each copy from the caller's operand, then runs that kernel.

What a copy costs:

- an spc Tensor (or one made by ``k.prepare``): the copy's structure (its level
  arrays and where each stored value goes) is computed once and kept on the
  Tensor (``Tensor.derived``, stamped with the storage it came from); a call
  only gathers the values, one pass over them (so values changed in place are
  seen);
- any other host operand (scipy, numpy, torch): converted to the copy's format
  on every call (a sort of its coordinates, as ``spc.tensor(x, fmt)``; scipy
  input whose copy is csr, csc or coo goes through scipy's own conversion,
  then the usual checks);
- a device operand (CuPy, cupyx, CUDA torch tensor, device spc Tensor): copied
  to the host, converted there as above and copied back, on every call, with a
  PerformanceWarning (spc does not convert on the device yet); the result comes
  back on the device, in the operands' family.

An output the kernels cannot build (coo, dcsr, csf, ell, hyb...) is computed
in one they do (csr-like: dense levels over one compressed level, in some mode
order; dense as the last resort, refused above ``DENSE_OUTPUT_LIMIT`` entries)
and converted on every call: its coordinates gathered, sorted and packed by
the wanted format's levels (on the host: a device result goes there and back).

The conversion reuses spc's format conversion (``from_coords``), not a kernel
generated from the IR.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedError
from ..formats.composite import SumFormat, SumTensor, sum_tensor
from ..formats.format import Format, resolve_format
from ..formats.tensor import Tensor, _is_scipy_sparse, from_coords
from ..ir.nodes import DType
from ..ir.operand_copies import CopyPlan, OperandCopy, OutputCopy
from .compiled import KernelSequence, bind_operands, call_option, prepared_input
from .inspectors import storage_stamp
from ..frontend.check import index_sizes
from .operands import (as_scipy_kind, from_dlpack, on_device, operand_errors, result_family,
                       scipy_arrays, shape_of, to_tensor)

DENSE_OUTPUT_LIMIT = 1 << 27   # entries of a sparse output computed densely, then converted
SCIPY_LAYOUTS = ("csr", "csc", "coo")   # copies of scipy input scipy converts to itself


def copy_structure(t: Tensor, fmt: Format):
    """(level arrays, stored length, slots, sources): ``fmt``'s storage of the
    entries of ``t``, where the copy's value ``slots[k]`` is ``t.vals[sources[k]]``
    and every other slot of the copy is zero.

    Requires: ``t`` is on the host, sorted and unique (validated).  Ensures: the
    arrays are those ``spc.tensor(t, fmt)`` builds."""
    n = len(t.vals)
    probe = Tensor(t.shape, t.format, t.arrays, np.arange(1, n + 1, dtype=np.float64),
                   validate=False)
    coords, positions = probe.to_coo()             # padding excluded
    built = from_coords(coords, positions, t.shape, fmt, sum_duplicates=False)
    where = built.vals.astype(np.int64) - 1
    slots = np.flatnonzero(where >= 0)
    return built.arrays, len(built.vals), slots, where[slots]


def host_copy(x):
    """Device operand ``x`` on the host, in the host family nearest its own: a
    CuPy array as numpy, a cupyx matrix as scipy, a CUDA torch tensor as a CPU
    one, a device spc Tensor as a host one."""
    if isinstance(x, Tensor):
        from .device import DeviceOperands
        return DeviceOperands.get().to_host(x)
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return x.cpu()


def _warn_round_trip(what: str, shown: str, instead: str) -> None:
    import warnings
    from ..errors import PerformanceWarning
    from .operands import caller_level
    warnings.warn(f"{what}: spc builds it on the host, so {shown} goes to the host and back "
                  f"on every call; {instead} to avoid it", PerformanceWarning,
                  stacklevel=caller_level())


def device_result(out, user_operands: list):
    """Result ``out`` of a call with device operands among ``user_operands``, on
    the device in their family (torch CUDA tensors: torch; else CuPy arrays and
    cupyx matrices, or spc Tensors with CuPy arrays where cupyx has no layout);
    ``out`` unchanged where it is there already."""
    from .device import DeviceOperands
    if on_device(out):
        return out
    ops = DeviceOperands.get()
    fams = {ops.family(x) for x in user_operands if on_device(x)}
    if type(out).__module__.startswith("torch"):       # a CPU torch result: torch operands
        return out.cuda()
    vals = out.vals if isinstance(out, Tensor) else out
    if "torch" not in fams and getattr(vals, "dtype", None) == np.dtype(DType.BF16.np):
        return out            # CuPy holds no bfloat16: such results stay on the host (device.py)
    if _is_scipy_sparse(out):
        layout = out.format if out.format in SCIPY_LAYOUTS else "csr"
        out = to_tensor(out, resolve_format(layout, 2), out.dtype, "the result", False)
    if isinstance(out, (np.ndarray, np.generic, float, int)):   # dense, or a scalar
        out = np.asarray(out)
        if "torch" in fams:
            import torch
            return torch.from_numpy(out.copy() if out.ndim == 0 else np.ascontiguousarray(out)
                                    ).cuda()      # ascontiguousarray makes 0-d arrays 1-d
        return ops.cp.asarray(out)
    if isinstance(out, SumTensor):            # hyb and other sums: their parts on the device
        return SumTensor(out.shape, out.format, [ops.to_device(p) for p in out.parts],
                         out.width)
    t = ops.to_device(out)
    if "torch" in fams:
        return ops._to_torch(t, True)
    return ops._to_cupy(t, sparse_family="cupyx" if "cupyx" in fams else "spc")


def read_copy(x, copy: OperandCopy, dtype: np.dtype, shown: str, validate: bool) -> Tensor:
    """Operand ``x`` (the caller's value of ``copy.source``) stored in
    ``copy.format`` with values of ``dtype``; see the module docstring for what
    it costs per operand family."""
    if on_device(x):
        _warn_round_trip(f"operand {shown}: read through a copy in {copy.format} (its "
                         f"storage order conflicts with the other operands')", shown,
                         f"compile with {shown} in {copy.format}")
        x = host_copy(x)
    fmt = copy.format
    if isinstance(x, Tensor) and not isinstance(x.format, SumFormat):
        key = ("copy", fmt)
        stamp = storage_stamp(x)
        hit = x.derived.get(key)
        if hit is None or hit[0] != stamp:
            if validate:
                with operand_errors(shown):
                    x.validate(f"operand {shown}")
            hit = (stamp, copy_structure(x, fmt))
            x.derived[key] = hit
        arrays, count, slots, sources = hit[1]
        vals = np.zeros(count, dtype=dtype)
        vals[slots] = x.vals[sources]
        return Tensor(x.shape, fmt, arrays, vals, validate=False)
    if isinstance(x, SumTensor):
        coords, vals = x.to_coo()
        return from_coords(coords, np.asarray(vals).astype(dtype), x.shape, fmt)
    if _is_scipy_sparse(x) and fmt.name in SCIPY_LAYOUTS and \
            fmt == resolve_format(fmt.name, 2) and x.format != fmt.name:
        with operand_errors(shown):
            x = x.asformat(fmt.name)      # scipy's own transposition (compiled), then checked
    return to_tensor(x, fmt, dtype, shown, validate)


def in_family(out, user_operands: list, given: list):
    """The result ``out`` of a call that received ``given`` in the family the
    caller's ``user_operands`` ask for (a sparse result of scipy input as
    scipy, of torch input as torch)."""
    fam = result_family(user_operands)
    if fam == result_family(given):
        return out
    if isinstance(out, Tensor) and isinstance(out.vals, np.ndarray) and out.ndim == 2 \
            and not out.format.is_dense:
        if fam == "torch":
            return out.to_torch()
        if fam == "scipy":
            layout = out.format.name if out.format.name in ("csr", "csc", "coo") else "csr"
            return as_scipy_kind(out.to_scipy(layout), scipy_arrays(user_operands))
    if isinstance(out, np.ndarray) and fam == "torch":
        import torch
        from ..formats.convert import torch_from_numpy
        return torch_from_numpy(torch, out)
    return out


def converted_output(out, output: OutputCopy, dtype: np.dtype, shown: str, user_operands: list):
    """The kernels' result ``out`` (in ``output.computed``, in any family) stored
    in ``output.wanted`` (its coordinates gathered, sorted and packed by the
    format's levels), returned as the callers' operands' family returns a
    sparse result: scipy (csr, csc or coo layout), torch, else an spc Tensor."""
    wanted = output.wanted
    if isinstance(wanted, SumFormat):
        t = sum_tensor(out, wanted, dtype=dtype)
    else:
        t = to_tensor(out, wanted, dtype, shown, False)
    fam = result_family(user_operands)
    if t.ndim == 2 and fam == "torch":
        return t.to_torch() if not isinstance(t, SumTensor) else from_coords(
            *t.to_coo(), t.shape, "csr").to_torch()
    if t.ndim == 2 and fam == "scipy":
        name = getattr(t.format, "name", None)
        layout = name if name in ("csr", "csc", "coo") else "csr"
        return as_scipy_kind(t.to_scipy(layout), scipy_arrays(user_operands))
    return t


class CopyingKernel(KernelSequence):
    """A compiled expression that reads some operands through copies in another
    storage order; called like CompiledKernel.  ``copies`` lists them;
    ``ir`` shows them above the kernels' IR."""

    def __init__(self, plan: CopyPlan, inner, *, expression, formats: dict, inputs,
                 display: dict[str, str], name: str):
        """``inner``: the kernel compiled for ``plan.assign`` (CompiledKernel or
        CompositeKernel) taking ``inner.inputs``; the other arguments describe
        the expression as the user wrote it (internal names, see CompiledKernel)."""
        self.plan = plan
        self.copies = plan.copies
        self.inner = inner
        self.kernels = [inner]
        self.expression = expression
        self.formats = formats
        self.inputs = tuple(inputs)
        self.display = dict(display)
        self.input_names = tuple(self.display.get(n, n) for n in self.inputs)
        self.name = name
        self.target = inner.target
        self.dtype = inner.dtype
        self._copy_of = {c.copy: c for c in plan.copies}

    # -- what it is ---------------------------------------------------------------
    @property
    def output(self) -> str:
        return self.expression.lhs.tensor

    def describe_copies(self) -> list[str]:
        """One line per copy (the output's last), in the user's names."""
        lines = [c.describe(self.display) for c in self.copies]
        if self.plan.output is not None:
            lines.append(self.plan.output.describe(self.display))
        return lines

    @property
    def ir(self) -> str:
        """The copies (as comments), then the scheduled IR of every kernel."""
        head = "".join(f"# operand copy: {c.describe(self.display)}\n" for c in self.copies)
        if self.plan.output is not None:
            head += f"# output copy: {self.plan.output.describe(self.display)}\n"
        if self.plan.reason:
            head += f"# because: {self.plan.reason}\n"
        return head + self.inner.ir

    @property
    def schedule(self):
        return self.inner.schedule

    def lowered_kernels(self) -> tuple:
        return self.inner.lowered_kernels()

    def build(self, *args, **kwargs) -> "CopyingKernel":
        self.inner.build(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return (f"spc.CopyingKernel({self.expression.source!r}, target={self.target.name}, "
                f"copies={[c.copy for c in self.copies]})")

    # -- calling ------------------------------------------------------------------
    def fast(self, args, validate: bool = True):
        """None: calls take the general path (the copies are built there)."""
        return None

    def _operands(self, bound: dict, validate: bool) -> list:
        ops = []
        for n in self.inner.inputs:
            c = self._copy_of.get(n)
            if c is None:
                ops.append(bound[n])
            else:
                ops.append(read_copy(bound[c.source], c, self.dtype.np,
                                     self.display.get(c.source, c.source), validate))
        return ops

    def _call(self, args, kwargs):
        validate = call_option(self.input_names, kwargs)
        by_user = bind_operands(self.name, self.input_names, args, kwargs)
        bound = {n: by_user[u] for n, u in zip(self.inputs, self.input_names)}
        output = self.plan.output
        users = list(bound.values())
        any_device = any(on_device(x) for x in users)
        if output is not None and output.computed.is_dense:
            self._check_dense_size(bound, output)
        ops = self._operands(bound, validate)
        off = {} if validate or "validate" in self.inner.input_names else {"validate": False}
        out = self.inner._call(tuple(ops), off)
        if output is None:
            out = in_family(out, users, ops)
            return device_result(out, users) if any_device else out
        shown = self.display.get(self.output, self.output)
        if any_device:
            _warn_round_trip(f"{shown}: computed in {output.computed} and converted to "
                             f"{output.wanted}", shown, f"ask for {shown} in {output.computed}")
            out = host_copy(out) if on_device(out) else out
            return device_result(converted_output(out, output, self.dtype.np, shown,
                                                  [host_copy(x) if on_device(x) else x
                                                   for x in users]), users)
        return converted_output(out, output, self.dtype.np, shown, users)

    def _check_dense_size(self, bound: dict, output: OutputCopy) -> None:
        """Raise UnsupportedError before computing the output densely when it would
        hold more than DENSE_OUTPUT_LIMIT entries."""
        shapes = {n: shape_of(from_dlpack(x)) for n, x in bound.items()}
        sizes = index_sizes(self.expression, shapes, self.display)
        entries = math.prod(sizes[ix] for ix in self.expression.lhs.indices)
        if entries > DENSE_OUTPUT_LIMIT:
            shown = self.display.get(self.output, self.output)
            raise UnsupportedError(
                f"{self.name}: {shown} would be computed densely ({entries} entries) before "
                f"its conversion to {output.wanted}, more than spc allows "
                f"({DENSE_OUTPUT_LIMIT}); use a dense output or an output format the kernels "
                f"build (csr, csc)")

    def prepare(self, operand, name: str | None = None) -> Tensor:
        """``operand`` as an spc Tensor in its input's format with its copies'
        structure computed and kept on it: calls given it gather values only.
        ``name``: the input it stands for (default: the one input read through
        copies)."""
        internal = prepared_input(self, name,
                                  list(dict.fromkeys(c.source for c in self.copies)))
        shown = self.display.get(internal, internal)
        fmt = self.formats[internal]
        if isinstance(fmt, SumFormat) or on_device(operand):
            raise UnsupportedError(f"{self.name}: prepare: {shown} is read through a copy "
                                   f"that spc builds from host tensors in plain formats only")
        t = to_tensor(operand, fmt, self.dtype.np, shown, True)
        if t is operand:
            t = Tensor(t.shape, t.format, t.arrays, t.vals, validate=False)
        for c in self.copies:
            if c.source == internal:
                read_copy(t, c, self.dtype.np, shown, False)
        return t
