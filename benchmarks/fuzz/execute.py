"""One fuzz case through spc, classified.

Outcomes: ``ok``; ``refused`` (an ``spc.SpcError`` other than CompileError, at
tensor construction, compile or call: a valid program spc declines, counted by
exception type and stage); ``failure`` with a kind: ``wrong-answer``,
``wrong-shape``, ``wrong-dtype``, ``bad-result``, ``exception`` (a non-spc
exception), ``compile-error`` (spc.CompileError: spc's own "please report"),
and, from the pool, ``crash`` and ``hang``.  ``harness`` marks a bug of the fuzzer.
"""
from __future__ import annotations

import contextlib
import traceback

import numpy as np

from . import expr as E
from .operands import build, result_dtype, to_dense

USER_FORMATS_DONE = False


def register_user_formats() -> None:
    """The SELL-C-sigma format of examples/sell_c_sigma.py, as "sell" (C=2, sigma=4)."""
    global USER_FORMATS_DONE
    if USER_FORMATS_DONE:
        return
    import importlib.util
    import sys
    from pathlib import Path
    import spc
    # one module object per process: executing the example again would register its
    # formats a second time with other classes (formats of the two never compare equal)
    mod = sys.modules.get("sell_c_sigma")
    if mod is None:
        path = Path(__file__).resolve().parents[2] / "examples" / "sell_c_sigma.py"
        spec = importlib.util.spec_from_file_location("sell_c_sigma", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sell_c_sigma"] = mod
        spec.loader.exec_module(mod)
    if "sell" not in spc.format_names():
        mod.register(C=2, sigma=4, name="sell")
    USER_FORMATS_DONE = True


def reference_arrays(case: dict) -> dict:
    out = {}
    for name, idx in case["tensors"].items():
        op = case["operands"][name]
        shape = tuple(case["extents"][ix] for ix in idx)
        a = np.asarray(op["values"], dtype=np.float64).reshape(shape)
        if "cast" in op:
            a = a.astype(op["cast"]).astype(np.float64)
        out[name] = a
    return out


MAX_SPACE_INDICES = 4      # schedule_space tries every loop order: 24 at most


def make_schedule(case: dict):
    """The case's Schedule: its order/parallel/threads, or with ``pick`` in [0, 1)
    the schedule at that fraction of ``spc.schedule_space`` (the default schedule
    for programs of more than MAX_SPACE_INDICES indices).  ``threads`` is a CPU
    knob, dropped on CUDA (where spc refuses it)."""
    import spc
    s = case.get("schedule")
    if s is None:
        return None
    if "pick" in s:
        if len({ix for idx in case["tensors"].values() for ix in idx}) > MAX_SPACE_INDICES:
            return None
        space = spc.schedule_space(case["expr"], formats=dict(case["formats"]),
                                   dtype=case["dtype"], target=case.get("target", "cpu"))
        return space[int(s["pick"] * len(space))]
    order = tuple(s["order"]) if s.get("order") is not None else None
    threads = s["threads"] if case.get("target", "cpu") == "cpu" else None
    return spc.Schedule(order=order, parallel=s["parallel"], threads=threads)


def _err(stage: str, err: BaseException) -> dict:
    import spc
    name = type(err).__name__
    msg = str(err).splitlines()[0][:300] if str(err) else ""
    if isinstance(err, spc.CompileError):
        return {"outcome": "failure", "kind": "compile-error", "stage": stage, "error": name,
                "message": msg, "trace": traceback.format_exc(limit=-6)}
    if isinstance(err, spc.SpcError):
        return {"outcome": "refused", "kind": f"{name}@{stage}", "stage": stage,
                "error": name, "message": msg}
    return {"outcome": "failure", "kind": "exception", "stage": stage, "error": name,
            "message": msg, "trace": traceback.format_exc(limit=-6)}


def compile_case(case: dict, **extra):
    import spc
    if "fuse" in case:
        extra.setdefault("fuse", case["fuse"])
    return spc.compile(case["expr"], formats=dict(case["formats"]), dtype=case["dtype"],
                       schedule=make_schedule(case), target=case.get("target", "cpu"), **extra)


def build_inputs(case: dict, device=None) -> dict:
    inputs = {}
    for name, idx in case["tensors"].items():
        shape = tuple(case["extents"][ix] for ix in idx)
        inputs[name] = build(case["operands"][name], case["formats"].get(name, "dense"),
                             case["dtype"], shape)
        if device is not None:
            inputs[name] = device(inputs[name])
    return inputs


def expected_answer(case: dict, host_inputs: dict | None = None):
    """(the float64 reference result, its error scale): a pattern-reading case's from
    its operands as handed over (``pattern.evaluate``), another's from the values."""
    if "statements" in case:
        from .pattern import evaluate
        host_inputs = host_inputs if host_inputs is not None else build_inputs(case)
        return evaluate(case, host_inputs), evaluate(case, host_inputs, absolute=True)
    arrays = reference_arrays(case)
    want = E.with_epilogue(case, E.reference(case["tree"], case["out_idx"], case["extents"],
                                             arrays))
    return want, E.reference(case["tree"], case["out_idx"], case["extents"], arrays,
                             absolute=True)


def check_result(case: dict, out, host_inputs: dict | None = None) -> dict:
    want, scale = expected_answer(case, host_inputs)
    public_error = None
    try:
        got = to_dense(out)
    except TypeError as err:
        # a result spc's own conversion cannot bring to numpy (a device-resident
        # spc.Tensor): check its values through spc's host copy, then report it
        public_error = {"outcome": "failure", "kind": "bad-result", "stage": "check",
                        "error": type(err).__name__,
                        "message": f"{type(out).__name__}.to_numpy(): {err}"}
        try:
            from spc.runtime.device import device_operands
            got = to_dense(device_operands().to_host(out))
        except Exception:  # noqa: BLE001
            return public_error
    if got.shape != want.shape:
        return {"outcome": "failure", "kind": "wrong-shape", "stage": "check", "error": "",
                "message": f"shape {got.shape}, expected {want.shape}"}
    rd = result_dtype(out)
    if rd is not None and rd != case["dtype"]:
        return {"outcome": "failure", "kind": "wrong-dtype", "stage": "check", "error": "",
                "message": f"dtype {rd}, expected {case['dtype']}"}
    rtol = 1e-4 if case["dtype"] == "float32" else 1e-10
    atol = rtol * (1 + float(scale.max(initial=0)))
    bad = ~np.isclose(got, want, rtol=rtol, atol=atol)
    if bad.any():
        where = tuple(int(v[0]) for v in np.nonzero(bad)) if got.ndim else ()
        return {"outcome": "failure", "kind": "wrong-answer", "stage": "check", "error": "",
                "message": f"{int(bad.sum())} of {bad.size} wrong; at {where}: got "
                           f"{got[where]!r}, expected {want[where]!r}"}
    return public_error or {"outcome": "ok", "kind": "ok"}


@contextlib.contextmanager
def forced_threads(on: bool):
    """With ``on``, even tiny calls take the multi-threaded path (spc runs calls
    under SMALL_WORK multiply-adds on one thread)."""
    if not on:
        yield
        return
    from spc.runtime import compiled
    old = compiled.SMALL_WORK
    compiled.SMALL_WORK = 0
    try:
        yield
    finally:
        compiled.SMALL_WORK = old


def run_case(case: dict, device=None) -> dict:
    """Run ``case`` on the CPU (or, with ``device`` mapping host operands to
    device ones, on the GPU); never raises."""
    import spc
    try:
        register_user_formats()
    except Exception as err:  # noqa: BLE001
        return {"outcome": "harness", "kind": "harness", "stage": "setup",
                "error": type(err).__name__, "message": str(err)[:300]}
    try:
        inputs = build_inputs(case, device)
    except Exception as err:  # noqa: BLE001 - spc.tensor in a family may refuse or fail
        tb = traceback.format_exc()
        if isinstance(err, spc.SpcError) or "/spc/" in tb:
            return _err("tensor", err)
        return {"outcome": "harness", "kind": "harness", "stage": "operands",
                "error": type(err).__name__, "message": str(err)[:300], "trace": tb[-2000:]}
    host, refuse = None, []
    if "statements" in case:
        try:
            from .pattern import expected_refusals
            host = inputs if device is None else build_inputs(case)
            refuse = expected_refusals(case, host)
        except Exception as err:  # noqa: BLE001
            return {"outcome": "harness", "kind": "harness", "stage": "pattern",
                    "error": type(err).__name__, "message": str(err)[:300],
                    "trace": traceback.format_exc()[-2000:]}
    try:
        kernel = compile_case(case)
    except Exception as err:  # noqa: BLE001
        return _err("compile", err)
    try:
        with forced_threads(case.get("force_threads", False)):
            if case.get("call") == "positional":
                out = kernel(*[inputs[n] for n in kernel_inputs(kernel, case)])
            else:
                out = kernel(**inputs)
    except Exception as err:  # noqa: BLE001
        res = _err("call", err)
        if refuse and res["outcome"] == "refused":
            # the refusal the rule calls for (counted apart from spc's other refusals)
            ok = res["error"] == "FormatError" and any(f"operand {n}:" in res["message"]
                                                       for n in refuse)
            res["kind"] = "pattern-refusal" if ok else res["kind"] + " (pattern-refusal due)"
        return res
    try:
        res = check_result(case, out, host)
        if refuse:
            # the conversion would fill, yet spc ran (reading the operand some other
            # way, e.g. through a transposed copy): right answers are counted apart,
            # a wrong one is a missing refusal
            why = (f"converting {', '.join(refuse)} to "
                   f"{', '.join(case['formats'][n] for n in refuse)} fills entries they "
                   f"do not hold; spc ran instead of a FormatError")
            res = {"outcome": "ok", "kind": "ran-where-refusal-due", "message": why} \
                if res["outcome"] == "ok" else \
                dict(res, kind="missing-refusal", message=why + "; " + res.get("message", ""))
        return res
    except Exception as err:  # noqa: BLE001
        return {"outcome": "failure", "kind": "bad-result", "stage": "check",
                "error": type(err).__name__, "message": str(err)[:300],
                "trace": traceback.format_exc(limit=-6)}


def kernel_inputs(kernel, case: dict) -> list[str]:
    """The kernel's positional parameter order, as user names."""
    return list(getattr(kernel, "input_names", None) or kernel.inputs)
