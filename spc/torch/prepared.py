"""The sparse operand of the torch operators, prepared once per live CSR matrix.

A module such as ``SparseLinear`` calls its operator with the same ``crow``,
``col``, ``vals`` on every forward.  ``prepared_matrix`` builds what spc's
steady-state call wants from them once, and hands it back while those three
tensors are the same live objects, unmoved and unmodified (data pointers and
torch's version counters):

* CPU (values float16/32/64): an spc ``Tensor`` in the kernel's format (for csr:
  int32 indices where they fit and the values shared without a copy).  spc's
  planned fast call takes it with numpy views of the dense operand (about 40 us
  for a 1536 x 384 weight on 8 columns), where torch CPU tensors take the
  general path (about 200 us: a conversion and a validation on every call).
* CUDA: one torch sparse CSR tensor (BSR for a ``bsr(r,c)`` kernel, which reads
  it without a copy; other formats are converted by spc on every call).  spc
  checks a CUDA sparse operand's index arrays the first time it sees that tensor
  object (a copy to the host, one synchronization) and remembers the verdict for
  the object; a new tensor built on every call would be checked on every call.

As in spc's own CUDA path, a write that bypasses torch's version counter (into
``crow.data``, say) is not seen: build new tensors after one.
"""
from __future__ import annotations

import re
import weakref

import numpy as np
import torch
from torch import Tensor

import spc

# value types numpy holds (bfloat16 CPU tensors take the general path)
HOST_DTYPES = (torch.float32, torch.float64, torch.float16)
MAX_ENTRIES = 256
_INT32_MAX = np.iinfo(np.int32).max

_entries: dict[tuple[int, int, int, str], tuple] = {}
_BSR = re.compile(r"bsr\((\d+),(\d+)\)")


def _stamp(t: Tensor) -> tuple:
    return t.data_ptr(), t._version, tuple(t.shape)


def _build(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, fmt: str):
    shape = (crow.shape[0] - 1, n_cols)
    if vals.device.type != "cpu":
        csr = torch.sparse_csr_tensor(crow, col, vals, shape)
        block = _BSR.fullmatch(fmt.replace(" ", ""))
        if block is None:                 # csr; spc converts other formats on each call
            return csr
        r, c = int(block[1]), int(block[2])
        return csr.to_sparse_bsr((r, c)) if shape[0] % r == 0 and n_cols % c == 0 else csr
    pos, crd = crow.detach().numpy(), col.detach().numpy()
    if len(crd) <= _INT32_MAX and n_cols <= _INT32_MAX:
        pos, crd = pos.astype(np.int32), crd.astype(np.int32)
    return spc.tensor(torch.sparse_csr_tensor(torch.from_numpy(pos), torch.from_numpy(crd),
                                              vals.detach(), shape), fmt)


def prepared_matrix(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, fmt: str = "csr"):
    """The CSR matrix of the arrays as spc's steady-state call wants it for a kernel
    with the matrix in ``fmt`` (see the module's docstring; the CPU's validated when
    built), the same object while the arrays are unchanged; None for CPU values numpy
    lacks (bfloat16)."""
    if vals.device.type == "cpu" and vals.dtype not in HOST_DTYPES:
        return None
    key = (id(crow), id(col), id(vals), fmt)
    stamps = (_stamp(crow), _stamp(col), _stamp(vals), n_cols)
    hit = _entries.get(key)
    if hit is not None and hit[1] == stamps and all(r() is t for r, t in
                                                     zip(hit[0], (crow, col, vals))):
        return hit[2]
    matrix = _build(crow, col, vals, n_cols, fmt)
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    refs = tuple(weakref.ref(t, lambda ref, key=key: _forget(key, ref))
                 for t in (crow, col, vals))
    _entries[key] = (refs, stamps, matrix)
    return matrix


def _forget(key: tuple, ref: weakref.ref) -> None:
    """Drop the entry of ``key`` when one of its tensors dies (not a newer entry that
    took the same ids)."""
    entry = _entries.get(key)
    if entry is not None and any(r is ref for r in entry[0]):
        del _entries[key]


def host_dense(x: Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory."""
    return x.detach().numpy()


__all__ = ["host_dense", "prepared_matrix"]
