"""The straight-line torch call (runtime/torch_specialize.py) as written for
each kernel shape, without a GPU: it compiles, reads each operand once, bakes
the parameter order, and declines what the fast path does not take.  The GPU
tests (test_cuda_fast.py) run it against the generic walk."""
from __future__ import annotations

import pytest

import spc
from spc.ir.lower import level_io, size_var, vals_buffer
from spc.ir.nodes import Buffer, DType, i64

torch = pytest.importorskip("torch")
from spc.runtime.torch_fast import SIZE, TorchFastPath, _KernelFeed  # noqa: E402
from spc.runtime.torch_specialize import specialize  # noqa: E402


class _Plan:
    lane_buffer = None
    items_buffer = None


class _Launch:
    plan = _Plan()


def _written(kernel: str, fmt: str | None = None, **kw):
    """The specialized call of ``kernel``, from feeds derived as _feeds does
    (None also where the fast path does not take the kernel)."""
    k = spc.compile(kernel, **({"fmt": fmt} if fmt else {}), target="cuda", arch="sm_90",
                    **kw).specialize("float32")
    path = TorchFastPath.of(k)
    if path is None:
        return None
    names = {}
    for n_, name in enumerate(k.inputs):
        names[vals_buffer(name, k.dtype).name] = (n_, 0)
        if path.kinds[n_][0] != "dense":
            io = level_io(name, 1, i64(0), DType.I32)
            names[io.buffer("pos").name] = (n_, 1)
            names[io.buffer("crd").name] = (n_, 2)
    sizes = {size_var(ix).name: ix for ix in path.sources}
    feeds = []
    for kern in k.lowered_kernels():
        params = []
        for p in kern.params:
            if isinstance(p.value, Buffer):
                if p.tensor != k.output and not p.inspector and p.name not in names:
                    return None                  # a level array of another format
                params.append((-1, 0) if p.tensor == k.output else
                              (k.inputs.index(p.tensor), p.inspector) if p.inspector else
                              names[p.name])
            elif p.name in sizes:
                params.append((SIZE, sizes[p.name]))
            else:
                return None                      # a level scalar
        feeds.append(_KernelFeed(_Launch(), params))
    return specialize(path, feeds)


@pytest.mark.parametrize("kernel, fmt, launch", [
    ("spmv", "csr", "[p0[2], p0[1], p0[0], a1.data_ptr(), out_ptr, z_0, z_1]"),
    ("spmm", "csr", "[p0[2], p0[1], p0[0], a1.data_ptr(), out_ptr, z_0, z_1, z_2]"),
    ("spmm", "csc", "[p0[2], p0[1], p0[0], a1.data_ptr(), out_ptr, z_0, z_1, z_2]"),
    ("sddmm", "csr", "[p0[2], p0[1], p0[0], out_ptr, a1.data_ptr(), a2.data_ptr(), z_0, z_1, "
                     "z_2]"),
])
def test_the_written_call(kernel, fmt, launch):
    call = _written(kernel, fmt)
    src = call.source
    assert f"feeds[0].launch.run(({launch[1:-1]}, )" in src    # the parameters as a tuple
    assert src.count("lookup(") == 1 and "for " not in src      # straight line, one lookup
    if kernel == "sddmm":
        assert "return make_sparse(e0[5][1], e0[5][2], out" in src
    else:
        assert "return out" in src
    # host tensors are not the fast path's: declined before anything is read
    args = [torch.ones(3, 3).to_sparse_csr()] + [torch.ones(3, 3)] * (2 if kernel == "sddmm"
                                                                      else 1)
    assert call(tuple(args), True) is None


def test_kernels_with_inspector_arrays_keep_the_generic_walk():
    assert _written("spmm", "csr", split_rows=8) is None


def test_kernels_without_operands_keep_the_generic_walk():
    assert _written("Z = 0.5") is None


def test_every_random_expression_gets_code_that_compiles():
    """The hypothesis suite's problems: whatever the fast path takes is written
    out as code that compiles and declines host operands."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from test_hypothesis import problems

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(problems())
    def check(p):
        try:
            call = _written(p.expr, formats=p.formats, dtype=p.dtype)
        except spc.SpcError:
            return
        if call is not None:
            assert call(tuple(p.inputs.values()), True) is None

    check()
