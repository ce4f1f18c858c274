"""``spc.set_num_threads`` / ``spc.get_num_threads``: the CPU threads a call may use.

Every CPU kernel runs its parallel loop on at most ``get_num_threads()``
threads: the default is ``SPC_NUM_THREADS``, else ``OMP_NUM_THREADS``, else
every core the process may run on; ``set_num_threads(n)`` changes it for the
whole process from the next call on, kernels compiled already included (it
caps spc's thread pool, so a call pays nothing for it).  A schedule's
``threads=`` is the most a kernel asks for; the smaller of the two wins.
threadpoolctl's ``threadpool_limits`` sets the same cap (``threadpool_control.py``).
"""
from __future__ import annotations

import threading

from . import config
from .errors import ScheduleError, UnsupportedError

_lock = threading.Lock()
_set: int | None = None


def set_num_threads(n: int | None) -> None:
    """At most ``n`` (>= 1) threads per CPU call, from now on, in this process
    (None: back to the default).  UnsupportedError where spc's own thread pool
    does not run (not Linux)."""
    global _set
    if not (n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 1)):
        raise ScheduleError.of("threads", f"set_num_threads takes a positive int or None, "
                                          f"not {n!r}")
    from .codegen.cpu import threading_mode
    from .codegen.cpu_pool import MAX_WORKERS, load_pool
    if threading_mode() != "pool":
        raise UnsupportedError("spc.set_num_threads needs spc's thread pool (Linux); set "
                               "SPC_NUM_THREADS before importing spc instead")
    with _lock:
        _set = None if n is None else min(n, MAX_WORKERS + 1)
        load_pool().set_cap(MAX_WORKERS + 1 if _set is None else _set)


def cap() -> int | None:
    """The limit ``set_num_threads`` set, or None."""
    return _set


def get_num_threads() -> int:
    """The most threads a CPU call uses now by default (see the module docstring)."""
    default = config.num_threads()
    return default if _set is None else min(_set, default)


__all__ = ["cap", "get_num_threads", "set_num_threads"]
