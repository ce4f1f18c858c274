"""Shrink a failing fuzz case while it fails the same way, and print it as a
short Python reproducer.

Reductions, tried greedily until none applies: drop additive terms and factors,
unwrap parentheses and minus signs, drop output indices, drop the schedule,
formats to dense / csr, families to plain numpy, dtype to float64, extents down
(slicing the data), nonzeros to zero and values to 1, names to A, B, ... / i, j, ...
"""
from __future__ import annotations

import copy
import keyword
import time

import numpy as np

from . import expr as E
from .pool import Pool

# ------------------------------------------------------------ running one case


class Runner:
    """Runs single cases in one long-lived worker process (crashes and hangs are
    caught; the worker is replaced after either)."""

    def __init__(self, mode: str = "cpu", timeout: float = 60.0, env: dict | None = None):
        env = dict(env or {"SPC_NO_DISK_CACHE": "1", "SPC_NUM_THREADS": "2"})
        self.mode, self.timeout, self.env = mode, timeout, env
        self.pool = Pool(1, timeout, env=env, mode="cpu" if mode == "cuda-render" else mode)
        self.worker = None

    def __call__(self, case: dict) -> dict:
        if self.mode == "cuda-render":
            from .cuda import render_batches
            return next(iter(render_batches([case], jobs=1, batch=1, timeout=self.timeout,
                                            env=self.env)))[1]
        if self.worker is None:
            self.worker = self.pool._start()
        w = self.worker
        w["conn"].send([case])
        res = None
        if w["conn"].poll(self.timeout):
            try:
                res = w["conn"].recv()
            except (EOFError, OSError):
                res = None
        if res is None:
            w["proc"].join(1)
            code = w["proc"].exitcode
            if code is None:
                res = {"outcome": "failure", "kind": "hang", "stage": "?", "error": "timeout",
                       "message": f"no result after {self.timeout:.0f} s"}
            else:
                res = {"outcome": "failure", "kind": "crash", "stage": "?",
                       "error": f"exit {code}", "message": f"worker died (exit code {code})"}
            self.pool._stop(w, kill=True)
            self.worker = None
        return res

    def close(self):
        if self.worker is not None:
            self.pool._stop(self.worker)
            self.worker = None


def same_failure(a: dict, b: dict) -> bool:
    return a["outcome"] == b["outcome"] and a["kind"] == b["kind"] and \
        a.get("error", "") == b.get("error", "")


# ------------------------------------------------------------ case surgery


def normalize(case: dict) -> dict | None:
    """Drop tensors, operands and output indices the tree no longer uses;
    None if the case became inconsistent."""
    case = copy.deepcopy(case)
    if "statements" in case:
        return _normalize_program(case)
    accs = E.accesses(case["tree"])
    names = {a[1] for a in accs}
    case["tensors"] = {n: i for n, i in case["tensors"].items() if n in names}
    case["operands"] = {n: o for n, o in case["operands"].items() if n in names}
    case["formats"] = {n: f for n, f in case["formats"].items()
                       if n in names or n == case["out"]}
    used = list(dict.fromkeys(ix for a in accs for ix in a[2]))
    case["out_idx"] = [ix for ix in case["out_idx"] if ix in used]
    if not case["out_idx"]:
        case["formats"].pop(case["out"], None)
    case["extents"] = {ix: n for ix, n in case["extents"].items() if ix in used}
    s = case.get("schedule")
    if s and s.get("order") is not None:
        s["order"] = [ix for ix in s["order"] if ix in used]
    if case.get("epilogue") is not None and not E.reduced_index(case["tree"],
                                                                 case["out_idx"])[0]:
        case["epilogue"] = None
    case["expr"] = E.statement(case["out"], case["out_idx"], case["tree"],
                               case.get("epilogue"))
    return case


def _tree_variants(t):
    """Smaller trees than ``t`` (each one edit)."""
    kind = t[0]
    if kind == "acc":
        return [["const", "1"]]
    if kind == "const":
        return [] if t[1] in ("1",) else [["const", "1"]]
    if kind == "neg":
        return [t[1]] + [["neg", v] for v in _tree_variants(t[1])]
    if kind == "mul":
        fs = t[1]
        out = []
        for n in range(len(fs)):
            rest = fs[:n] + fs[n + 1:]
            out.append(rest[0] if len(rest) == 1 else ["mul", rest])
        for n, f in enumerate(fs):
            for v in _tree_variants(f):
                out.append(["mul", fs[:n] + [v] + fs[n + 1:]])
        return out
    terms, paren = t[1], t[2]
    out = []
    if len(terms) > 1:
        for n in range(len(terms)):
            out.append(["sum", terms[:n] + terms[n + 1:], paren])
    if len(terms) == 1:
        if terms[0][0] < 0:
            out.append(["sum", [[1, terms[0][1]]], paren])
        if paren:
            out.append(terms[0][1] if terms[0][0] > 0 else ["neg", terms[0][1]])
    for n, (sign, term) in enumerate(terms):
        for v in _tree_variants(term):
            out.append(["sum", terms[:n] + [[sign, v]] + terms[n + 1:], paren])
    return out


def _slice_index(case: dict, ix: str, new: int) -> dict:
    """``case`` with index ``ix`` cut down to extent ``new`` (data sliced)."""
    case = copy.deepcopy(case)
    for name, idx in case["tensors"].items():
        op = case["operands"][name]
        shape = tuple(case["extents"][i] for i in idx)
        arr = np.asarray(op["values"], dtype=np.float64).reshape(shape)
        op["values"] = arr[tuple(slice(0, new) if i == ix else slice(None) for i in idx)].tolist()
    case["extents"][ix] = new
    return case


def _normalize_program(case: dict) -> dict:
    """A pattern-reading case (``gen_pattern.py``) keeps its statements; its text and
    last-statement fields follow them (after a rename)."""
    from .gen_pattern import _text
    last = case["statements"][-1]
    case["tree"], case["out"], case["out_idx"] = last["tree"], last["out"], last["out_idx"]
    case["expr"] = "; ".join(_text(s) for s in case["statements"])
    return case


def candidates(case: dict):
    """Smaller cases, most promising first (a pattern-reading case keeps its
    statements: its formats, families, data, extents and names shrink)."""
    program = "statements" in case
    for t in [] if program else _tree_variants(case["tree"]):
        if t[0] != "sum":
            t = ["sum", [[1, t]], False]
        if not E.accesses(t):
            continue
        c = copy.deepcopy(case)
        c["tree"] = t
        yield c
    for ix in [] if program else case["out_idx"]:
        c = copy.deepcopy(case)
        c["out_idx"] = [i for i in c["out_idx"] if i != ix]
        yield c
    if case.get("schedule") is not None:
        c = copy.deepcopy(case); c["schedule"] = None; yield c
    for name in sorted(case["formats"]):
        c = copy.deepcopy(case); del c["formats"][name]; yield c
    for name in sorted(case["formats"]):
        rank = len(case["out_idx"]) if name == case["out"] else len(case["tensors"][name])
        if rank == 2 and case["formats"][name] != "csr":
            c = copy.deepcopy(case); c["formats"][name] = "csr"; yield c
    for name, op in sorted(case["operands"].items()):
        plain = "float" if not case["tensors"][name] else "numpy"
        if op["family"] != plain:
            c = copy.deepcopy(case); c["operands"][name]["family"] = plain; yield c
        if "cast" in op:
            c = copy.deepcopy(case); del c["operands"][name]["cast"]; yield c
    if case["dtype"] != "float64":
        c = copy.deepcopy(case); c["dtype"] = "float64"; yield c
    if case.get("force_threads"):
        c = copy.deepcopy(case); c["force_threads"] = False; yield c
    if case.get("call") != "keyword":
        c = copy.deepcopy(case); c["call"] = "keyword"; yield c
    for ix, n in sorted(case["extents"].items()):
        for new in sorted({0, 1, 2, n // 2, n - 1}):
            if 0 <= new < n:
                yield _slice_index(case, ix, new)
    for name, op in sorted(case["operands"].items()):
        arr = np.asarray(op["values"], dtype=np.float64)
        nz = np.flatnonzero(arr)
        if len(nz) > 1:
            for part in (nz[: len(nz) // 2], nz[len(nz) // 2:]):
                c = copy.deepcopy(case)
                a = arr.copy(); a.flat[part] = 0; c["operands"][name]["values"] = a.tolist()
                yield c
        for p in nz[:8]:
            c = copy.deepcopy(case)
            a = arr.copy(); a.flat[p] = 0; c["operands"][name]["values"] = a.tolist()
            yield c
        if len(nz) and not np.all(arr.flat[nz] == 1.0):
            c = copy.deepcopy(case)
            a = arr.copy(); a.flat[nz] = 1.0; c["operands"][name]["values"] = a.tolist()
            yield c
    yield from _renames(case)


def _renames(case: dict):
    tensor_names = iter("ABCDEFGHMNPQRSTUVW")
    index_names = iter("ijklmnpq")
    taken = set(case["tensors"]) | set(case["extents"]) | {case["out"]} | \
        {st["out"] for st in case.get("statements", [])}
    for old in sorted(case["tensors"]):
        new = next(n for n in tensor_names if n not in taken)
        if len(old) == 1 and old.isupper():
            continue
        yield _rename(case, old, new)
    for old in sorted(case["extents"]):
        new = next(n for n in index_names if n not in taken)
        if len(old) == 1 and old.islower():
            continue
        yield _rename(case, old, new)
    if case["out"] not in ("Z",) and "Z" not in taken:
        yield _rename(case, case["out"], "Z")


def _rename(case: dict, old: str, new: str) -> dict:
    def walk(t):
        if t[0] == "acc":
            return ["acc", new if t[1] == old else t[1], [new if i == old else i for i in t[2]]]
        if t[0] == "const":
            return t
        if t[0] == "neg":
            return ["neg", walk(t[1])]
        if t[0] == "mul":
            return ["mul", [walk(f) for f in t[1]]]
        if t[0] == "stored":
            return ["stored", walk(t[1])]
        if t[0] == "red":
            return ["red", t[1], new if t[2] == old else t[2], walk(t[3])]
        return ["sum", [[s, walk(x)] for s, x in t[1]], t[2]]
    c = copy.deepcopy(case)
    ren = lambda n: new if n == old else n  # noqa: E731
    c["tree"] = walk(c["tree"])
    for st in c.get("statements", []):
        st["tree"], st["out"] = walk(st["tree"]), ren(st["out"])
        st["out_idx"] = [ren(i) for i in st["out_idx"]]
    c["out"] = ren(c["out"])
    c["out_idx"] = [ren(i) for i in c["out_idx"]]
    c["tensors"] = {ren(n): [ren(i) for i in idx] for n, idx in c["tensors"].items()}
    c["operands"] = {ren(n): o for n, o in c["operands"].items()}
    c["formats"] = {ren(n): f for n, f in c["formats"].items()}
    c["extents"] = {ren(i): v for i, v in c["extents"].items()}
    if c.get("schedule") and c["schedule"].get("order") is not None:
        c["schedule"]["order"] = [ren(i) for i in c["schedule"]["order"]]
    return c


def minimize(case: dict, result: dict, *, mode: str = "cpu", timeout: float = 60.0,
             budget_s: float = 180.0, runner=None, log=None) -> tuple[dict, dict]:
    """The smallest case found (within ``budget_s``) that fails like ``result``,
    and its result."""
    run = runner or Runner(mode, timeout)
    best, best_res = case, result
    first = normalize(case)
    res = run(first)
    if same_failure(res, result):
        best, best_res = first, res
    t0 = time.time()
    progress = True
    while progress and time.time() - t0 < budget_s:
        progress = False
        for cand in candidates(best):
            if time.time() - t0 > budget_s:
                break
            cand = normalize(cand)
            if cand is None or cand == best:
                continue
            res = run(cand)
            if same_failure(res, result):
                best, best_res = cand, res
                progress = True
                if log:
                    log(f"  -> {best['expr']}  {best['formats']}  {best['extents']}")
                break
    if runner is None:
        run.close()
    return best, best_res


# ------------------------------------------------------------ the reproducer


def _np(a: np.ndarray, dtype) -> str:
    a = np.asarray(a)
    if a.size == 0:
        return f"np.zeros({a.shape!r}, dtype=np.{np.dtype(dtype).name})"
    return f"np.array({a.tolist()!r}, dtype=np.{np.dtype(dtype).name})"


def literal(op: dict, fmt: str, dtype: str, shape: tuple) -> str:
    """Python source that builds the operand ``op`` as the fuzzer does."""
    import scipy.sparse as sp
    from .operands import build
    obj = build(op, fmt, dtype, shape)
    fam = op["family"]
    dt = np.dtype(op.get("cast", dtype)).name
    if fam == "float":
        return repr(obj)
    if fam == "np-scalar":
        return f"np.{dt}({float(obj)!r})"
    if fam in ("np-0d", "numpy"):
        return _np(obj, dt)
    if fam == "numpy-f":
        return f"np.asfortranarray({_np(obj, dt)})"
    if fam == "numpy-T":
        return f"{_np(np.asarray(obj).T, dt)}.T"
    if fam == "numpy-strided":
        big = np.zeros(tuple(2 * s for s in shape), dtype=dt)
        big[tuple(slice(None, None, 2) for _ in shape)] = obj
        return f"{_np(big, dt)}[{', '.join(['::2'] * len(shape))}]"
    if fam in ("spc", "spc-from-scipy"):
        return f"spc.tensor({_np(np.asarray(op['values']).reshape(shape).astype(dt), dt)}, {fmt!r})"
    if sp.issparse(obj):
        if obj.format in ("csr", "csc"):
            return (f"sp.{obj.format}_matrix(({_np(obj.data, dt)}, {obj.indices.tolist()!r}, "
                    f"{obj.indptr.tolist()!r}), shape={tuple(obj.shape)!r})")
        if obj.format == "coo":
            return (f"sp.coo_matrix(({_np(obj.data, dt)}, ({obj.row.tolist()!r}, "
                    f"{obj.col.tolist()!r})), shape={tuple(obj.shape)!r})")
        return f"sp.{obj.format}_matrix({_np(obj.toarray(), dt)})"
    import torch
    tdt = f"torch.{dt}"
    if obj.layout == torch.strided:
        return f"torch.tensor({obj.tolist()!r}, dtype={tdt})"
    if obj.layout == torch.sparse_coo:
        return (f"torch.sparse_coo_tensor({obj._indices().tolist()!r}, "
                f"torch.tensor({obj._values().tolist()!r}, dtype={tdt}), {tuple(obj.shape)!r})")
    if obj.layout == torch.sparse_csr:
        return (f"torch.sparse_csr_tensor({obj.crow_indices().tolist()!r}, "
                f"{obj.col_indices().tolist()!r}, torch.tensor({obj.values().tolist()!r}, "
                f"dtype={tdt}), {tuple(obj.shape)!r})")
    return f"torch.tensor({obj.to_dense().tolist()!r}, dtype={tdt}).to_sparse_csc()"


def on_device(lit: str, family: str, rank: int) -> str:
    """The device form of a host operand, as fuzz.cuda.device_mapper makes it."""
    if family.startswith("torch"):
        return f"({lit}).cuda()"
    if family.startswith("numpy") and rank > 0:
        return f"cupy.asarray({lit})"
    if family in ("scipy-csr", "scipy-csc", "scipy-coo"):
        return f"cupyx.scipy.sparse.{family[6:]}_matrix({lit})"
    return lit


def reproducer(case: dict, result: dict) -> str:
    lines = ["import numpy as np, scipy.sparse as sp, spc"]
    fams = {o["family"] for o in case["operands"].values()}
    if any(f.startswith("torch") for f in fams):
        lines[0] += ", torch"
    if case.get("target", "cpu") == "cuda":
        lines.append("import cupy, cupyx.scipy.sparse")
    if "sell" in case["formats"].values():
        lines.append("import sys; sys.path.insert(0, 'examples'); import sell_c_sigma; "
                     "sell_c_sigma.register(C=2, sigma=4, name='sell')")
    kw = [f"formats={case['formats']!r}" if case["formats"] else None,
          f"dtype={case['dtype']!r}"]
    if "fuse" in case:
        kw.append(f"fuse={case['fuse']!r}")
    if case.get("target", "cpu") != "cpu":
        kw.append("target='cuda'")
    s = case.get("schedule")
    if s and "pick" in s:
        from .execute import make_schedule
        kw.append(f"schedule=spc.{make_schedule(case)!r}")
    elif s:
        order = tuple(s["order"]) if s.get("order") is not None else None
        kw.append(f"schedule=spc.Schedule(order={order!r}, parallel={s['parallel']!r}, "
                  f"threads={s['threads']!r})")
    if case.get("force_threads"):
        lines.append("import spc.runtime.compiled; spc.runtime.compiled.SMALL_WORK = 0  "
                     "# even tiny calls on threads")
    lines.append(f"k = spc.compile({case['expr']!r}, {', '.join(x for x in kw if x)})")
    args = []
    for name, idx in case["tensors"].items():
        shape = tuple(case["extents"][ix] for ix in idx)
        fmt = case["formats"].get(name, "dense")
        lit = literal(case["operands"][name], fmt, case["dtype"], shape)
        if case.get("target", "cpu") == "cuda":
            lit = on_device(lit, case["operands"][name]["family"], len(shape))
        var = name if name.isidentifier() and name.isascii() and len(name) < 12 and \
            name not in KEYWORD_LIKE and not keyword.iskeyword(name) else f"t{len(args)}"
        lines.append(f"{var} = {lit}")
        args.append((name, var))
    ops = "{" + ", ".join(f"{n!r}: {v}" for n, v in args) + "}"
    if case.get("call") == "positional":
        lines.append(f"ops = {ops}")
        lines.append("out = k(*[ops[n] for n in k.input_names])   # positional call")
    else:
        lines.append(f"out = k(**{ops})")
    from .execute import expected_answer
    want, _ = expected_answer(case)
    lines.append(f"# numpy (float64) says: {np.round(want, 6).tolist()!r}")
    lines.append(f"# spc: {result['kind']}: {result.get('error', '')} {result.get('message', '')[:160]}")
    return "\n".join(lines)


KEYWORD_LIKE = {"int", "for", "float", "auto", "double", "if", "else", "while", "return", "const",
                "None", "lambda", "def", "import", "global", "nonlocal", "class", "True", "False",
                "sp", "np", "spc", "k", "out", "torch", "sys", "self", "args", "kwargs",
                "validate", "break", "continue", "del", "in", "is", "not", "or", "and",
                "pass", "raise", "try", "with", "yield", "from", "as", "assert", "except",
                "finally", "elif", "async", "await"}
