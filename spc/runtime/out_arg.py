"""The ``out=`` argument of a call: a dense array the result is written into.

``kernel(A, x, out=y)`` checks ``y`` before anything runs (an OutputError names
what does not fit: the result's format, the array's family or device, shape,
dtype, layout, writability), has the kernel write into it and returns ``y``
itself.  On the CPU ``y`` is a numpy array or a CPU torch tensor; on
target="cuda" a CuPy array or a CUDA torch tensor on the operands' GPU.  An
``out`` whose memory overlaps an array the kernel reads is refused (the kernel
would read entries it has already overwritten); so is one that needs
gradients.  Where the kernel's output array has another type than the result
(16-bit values summed in float32), the result is computed as without ``out``
and copied into it once.
"""
from __future__ import annotations

import numpy as np

from ..errors import OutputError

OUT = "out"


def out_option(inputs: tuple[str, ...], kwargs: dict):
    """The ``out`` keyword of a call (None when absent), taken out of ``kwargs``,
    unless a tensor is named ``out``: then the keyword is that tensor."""
    if OUT in inputs:
        return None
    return kwargs.pop(OUT, None)


def _module(x) -> str:
    return type(x).__module__.partition(".")[0]


def describe(x) -> str:
    """``x``'s family and place, for messages ("a numpy array", "a torch tensor on cuda:0")."""
    if _module(x) == "torch":
        return f"a torch tensor on {x.device}"
    if _module(x) == "cupy":
        return f"a CuPy array on GPU {x.device.id}"
    if isinstance(x, np.ndarray):
        return "a numpy array"
    return f"a {type(x).__module__}.{type(x).__name__}"


def check_out(out, *, result: str, fmt, shape: tuple[int, ...], dtype: np.dtype,
              device_id: int | None) -> None:
    """Raise OutputError unless ``out`` can hold the dense result ``result`` of
    ``shape`` and ``dtype``: a C-contiguous, writable array of the target's
    family (``device_id`` None: the host; else that GPU)."""
    if not (fmt.is_dense and fmt.identity_order):
        raise OutputError(f"out= is for dense results; {result} is stored as {fmt.name or fmt}")
    mod = _module(out)
    if device_id is None:
        ok = (isinstance(out, np.ndarray) and not isinstance(out, np.matrix)) or (
            mod == "torch" and out.device.type == "cpu")
        where = "a numpy array or a CPU torch tensor (target='cpu')"
    else:
        ok = (mod == "cupy" and isinstance(out, _cupy_ndarray()) and out.device.id == device_id) \
            or (mod == "torch" and out.is_cuda and out.device.index == device_id)
        where = f"a CuPy array or a CUDA torch tensor on GPU {device_id}, where the operands are"
    if not ok:
        raise OutputError(f"out= must be {where}; got {describe(out)}")
    got_shape = tuple(int(s) for s in out.shape)
    if got_shape != tuple(shape):
        raise OutputError(f"out= has shape {got_shape}; the result {result} has shape "
                          f"{tuple(shape)}")
    got = str(out.dtype).rpartition(".")[2]
    if got != np.dtype(dtype).name and not (got == "bfloat16" and str(dtype) == "bfloat16"):
        raise OutputError(f"out= holds {got}; the result {result} is {np.dtype(dtype).name} "
                          f"(no conversion is made)")
    if mod == "torch":
        if not out.is_contiguous():
            raise OutputError("out= must be C-contiguous (row-major, no gaps); got a "
                              "non-contiguous tensor")
        if out.requires_grad:
            raise OutputError("out= requires grad; a kernel cannot write into a tensor that "
                              "autograd tracks")
        return
    if not out.flags.c_contiguous:
        raise OutputError("out= must be C-contiguous (row-major, no gaps); got strides "
                          f"{tuple(out.strides)}")
    if mod != "cupy" and not out.flags.writeable:
        raise OutputError("out= is read-only")


def _cupy_ndarray():
    import cupy
    return cupy.ndarray


def flat_view(out, as_device_array=None):
    """A 1-D array over ``out``'s memory that the kernel writes (numpy on the
    host, CuPy on a GPU: ``as_device_array(tensor)`` makes one of a torch
    tensor), or None where no such view exists and the result must be copied."""
    if _module(out) == "torch":
        if str(out.dtype) == "torch.bfloat16":
            return None
        if out.device.type == "cpu":
            return out.detach().numpy().reshape(-1)
        return as_device_array(out.detach()).reshape(-1)
    return out.reshape(-1)


def overlapping(view, arrays: dict) -> str | None:
    """The name of an array in ``arrays`` whose memory may overlap ``view``'s
    (numpy or CuPy arrays; by their address ranges), or None."""
    if view.size == 0:
        return None
    share = np.may_share_memory
    if _module(view) == "cupy":
        import cupy
        share = cupy.may_share_memory
    for name, arr in arrays.items():
        if type(arr) is type(view) and arr.size and share(view, arr):
            return name
    return None


def copy_into(out, result) -> None:
    """Copy the dense ``result`` (a numpy or CuPy array on ``out``'s side; bfloat16
    values may be numpy's ml_dtypes type or their 16-bit patterns) into ``out``."""
    if _module(out) != "torch":
        out[...] = result.reshape(out.shape)
        return
    import torch
    if _module(result) == "cupy":
        src = torch.from_dlpack(result)
    else:
        arr = np.ascontiguousarray(result)
        if arr.dtype.name == "bfloat16":
            arr = arr.view(np.uint16)
        src = torch.from_numpy(arr)
    if src.dtype != out.dtype and not src.is_floating_point() \
            and src.element_size() == out.element_size():
        src = src.view(out.dtype)                 # bfloat16 values held as their bits
    out.copy_(src.reshape(out.shape))
