"""``spc.compile(kernel, schedule="auto")``: a kernel that, per sparse operand,
runs the format and schedule the tuning database recorded for the nearest
matrix (exact signature first), or the untuned default (``rules.py``) when it has none."""
from __future__ import annotations

import weakref
from collections import OrderedDict

from ..schedule import Schedule
from .bound import BoundKernel
from .reference import check_kernel, width
from .rules import untuned_schedule
from .signature import signature

KEPT_OPERANDS = 64          # operands whose choice is remembered (least recently used go)


class AutoKernel:
    """A named kernel whose format and schedule follow the tuning database.

    The first call with an operand computes its signature (milliseconds on a
    million nonzeros) and looks it up; the choice is kept per operand (its
    identity, shape and nnz) so later calls cost a dictionary look-up.
    ``fmt``: None lets the database choose the format (csr when it knows
    nothing); a format restricts the look-up to entries of that format.
    ``choice(A)`` says what a call with ``A`` runs and why.
    """

    def __init__(self, kernel: str, *, fmt=None, target="cpu", dtype=None, database=None):
        self.kernel_name = check_kernel(kernel)
        self.fmt, self.target, self.dtype = fmt, target, dtype
        self._database = database
        self._kernels: dict = {}
        self._choices: OrderedDict = OrderedDict()
        self.last = None

    @property
    def database(self):
        from .database import Database
        if self._database is None:
            self._database = Database.default()
        return self._database

    def __call__(self, A, *rest, **kwargs):
        bound = self._bound(A, rest)
        self.last = bound
        return bound(A, *rest, **kwargs)

    def choice(self, A, *rest) -> tuple[str, Schedule, str]:
        """(format, schedule, how) a call with ``A`` (and dense operands ``rest``)
        runs; ``how`` is "exact", "nearest" or "rules" (nothing recorded: the
        untuned default of ``rules.py``, in the format asked for or csr)."""
        return self._lookup(A, rest)

    def _bound(self, A, rest) -> BoundKernel:
        key = (id(A), getattr(A, "shape", None), getattr(A, "nnz", None))
        kept = self._choices.get(key)
        if kept is not None and kept[0]() is A:
            self._choices.move_to_end(key)
            return kept[1]
        fmt, schedule, _ = self._lookup(A, rest)
        bound = BoundKernel(self._compiled(fmt, schedule), fmt, schedule)
        try:
            self._choices[key] = (weakref.ref(A), bound)
        except TypeError:                      # an operand without weak references
            return bound
        while len(self._choices) > KEPT_OPERANDS:
            self._choices.popitem(last=False)
        return bound

    def _lookup(self, A, rest):
        dtype = str(self.dtype) if self.dtype is not None else str(getattr(A, "dtype", "float32"))
        sig = signature(A)
        n = width(self.kernel_name, rest)
        fmt = self.fmt or "csr"
        default = (fmt, untuned_schedule(self.kernel_name, sig, n, self.target)
                   if fmt == "csr" else Schedule(), "rules")
        try:
            hit = self.database.lookup(self.kernel_name, dtype, sig, n, self.target, fmt=self.fmt)
        except OSError:
            return default
        if hit is None:
            return default
        entry, exact = hit
        return entry.fmt, entry.schedule, "exact" if exact else "nearest"

    def _compiled(self, fmt, schedule):
        key = (fmt, schedule)
        if key not in self._kernels:
            from ..api import compile as spc_compile
            self._kernels[key] = spc_compile(self.kernel_name, fmt=fmt, target=self.target,
                                             dtype=self.dtype, schedule=schedule)
        return self._kernels[key]

    def __getattr__(self, attr):
        """``ir``, ``source``, ``schedule``...: those of the kernel the last call ran."""
        last = self.__dict__.get("last")
        if last is None:
            raise AttributeError(f"{attr}: call the auto kernel first (it has no kernel "
                                 f"until it sees an operand)")
        return getattr(last.kernel, attr)

    def __repr__(self) -> str:
        return f"<spc auto kernel {self.kernel_name} on {self.target}>"
